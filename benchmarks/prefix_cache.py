"""Prefix caching: time to first token of a request whose 1,000-token prefix another request left in the
KV cache, against the first request that had to prefill it (and against the same second request with
prefix caching off, in the same script).

    python benchmarks/prefix_cache.py [--model PATH.gguf] [--prefix-tokens 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def shared_prefix(tokenizer, n_tokens: int, seed: int = 0) -> list[int]:
    """n_tokens of ordinary text (words drawn from a fixed list), as token ids."""
    words = ("the river city market light story garden winter music paper window engine morning "
             "silver forest number letter teacher island bridge").split()
    rng = random.Random(seed)
    ids: list[int] = []
    while len(ids) < n_tokens:
        text = " ".join(rng.choice(words) for _ in range(n_tokens))
        ids = asyncio.run(tokenizer.encode(text, add_special_tokens=False))  # the seeds' tokenizer is async
    return ids[:n_tokens]


def ttfts(model: str, prefix_tokens: int, rounds: int, caching: bool) -> tuple[float, float]:
    """(best TTFT of a first request with a fresh prefix, best TTFT of a second one sharing it)."""
    from maxcli.engine.llm import LLM

    with LLM(model=model, max_length=prefix_tokens + 64, max_batch_size=1,
             kv_cache={"enable_prefix_caching": caching}) as llm:
        params = llm.default_sampling_params(max_new_tokens=1, temperature=0.0)
        llm.generate([[1, 2, 3]], params)  # warm-up
        first, second = [], []
        for r in range(rounds):
            prefix = shared_prefix(llm.tokenizer, prefix_tokens, seed=r)  # a new prefix each round: cold
            a = llm.generate([prefix + [42, 43]], params)[0]
            b = llm.generate([prefix + [44, 45, 46]], params)[0]
            first.append(a.metrics.ttft_s)
            second.append(b.metrics.ttft_s)
            if caching:
                assert b.metrics.cached_prompt_tokens >= prefix_tokens - llm.config.kv_cache.kv_cache_page_size
        return min(first), min(second)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--prefix-tokens", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cold, warm = ttfts(str(args.model), args.prefix_tokens, args.rounds, caching=True)
    _, uncached = ttfts(str(args.model), args.prefix_tokens, args.rounds, caching=False)
    print(f"{args.prefix_tokens}-token shared prefix, best of {args.rounds}:")
    print(f"  first request (prefills the prefix)     TTFT {cold * 1e3:8.1f} ms")
    print(f"  second request, prefix cached           TTFT {warm * 1e3:8.1f} ms   {cold / warm:6.1f}x sooner")
    print(f"  second request, prefix caching off      TTFT {uncached * 1e3:8.1f} ms   {uncached / warm:6.1f}x slower than cached")


if __name__ == "__main__":
    main()
