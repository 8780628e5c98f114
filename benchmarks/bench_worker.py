"""One engine in its own process, driven one measurement at a time by compare.py (peers.Worker).

    python benchmarks/bench_worker.py '{"engine": "maxcli", "model": "...", "threads": 2, ...}'

Engines: "maxcli" (maxcli.LLM with the spec's `flags`: {} is maxcli's defaults), "llama.cpp"
(llama-cpp-python), "hf" (transformers, float32, the same GGUF). After loading and one short warm-up it
writes {"ready": true, ...} on its protocol channel, then answers JSON lines read from stdin, one each:

    {"op": "tokenize", "args": {"text": ...}}                 -> {"ids": [...]}
    {"op": "decode", "args": {"ids": [...], "new_tokens": N}} -> greedy single stream: tok_s, ttft_s, token_ids
    {"op": "prefill", "args": {"ids": [...]}}                 -> ttft_s and prompt tok/s for a fresh cache
    {"op": "batch", "args": {"prompts": [...], "new_tokens": N}} -> out tok/s of one generate call (maxcli)

Decode tok/s is (N - 1) / (time of token N - time of token 1) for every engine, N tokens always produced
(ignore_eos / no EOS stop). Prefill is the time from submitting the token ids to the first new token,
with no cached prefix (maxcli: prefix caching off; llama.cpp: reset() first). The protocol channel is a
copy of the original stdout; fd 1 then points at stderr so that nothing an engine prints (C code
included) can corrupt it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


class MaxcliEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        from maxcli.config import PipelineConfig
        from maxcli.engine.llm import LLM
        from maxcli.interfaces import SamplingParams

        self.SamplingParams = SamplingParams
        kwargs = {"max_length": spec.get("max_length", 1024), "enable_prefix_caching": False, **spec.get("flags", {})}
        if "num_threads" in PipelineConfig.model_fields:
            kwargs.setdefault("num_threads", spec["threads"])
        self.llm = LLM(model=spec["model"], **kwargs)
        self.info = {"llm_kwargs": kwargs,
                     "cpu_quantized_matmul": getattr(self.llm.config, "cpu_quantized_matmul", None),
                     "cache_dtype": getattr(self.llm.config, "cache_dtype", None)}
        self.llm.generate("Hello, how are you today?", SamplingParams(temperature=0.0, max_new_tokens=16))  # warm-up

    def tokenize(self, text: str) -> dict[str, Any]:
        return {"ids": list(self.llm.tokenizer.delegate.encode(text, add_special_tokens=False))}

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, Any]:
        params = self.SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
        out = self.llm.generate([ids], params)[0]
        return {"tok_s": out.metrics.decode_tok_s, "ttft_s": out.metrics.ttft_s, "token_ids": out.token_ids}

    def prefill(self, ids: list[int]) -> dict[str, Any]:
        out = self.llm.generate([ids], self.SamplingParams(temperature=0.0, max_new_tokens=1, ignore_eos=True))[0]
        return {"ttft_s": out.metrics.ttft_s, "tok_s": len(ids) / out.metrics.ttft_s, "prompt_tokens": len(ids)}

    def batch(self, prompts: list[str], new_tokens: int) -> dict[str, Any]:
        params = self.SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
        start = time.perf_counter()
        outs = self.llm.generate(prompts, params)
        wall = time.perf_counter() - start
        n_out = sum(len(o.token_ids) for o in outs)
        return {"tok_s": n_out / wall, "wall_s": wall, "output_tokens": n_out,
                "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs)}


class LlamaCppEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        import llama_cpp
        from llama_cpp import Llama

        t = spec["threads"]
        self.kwargs = {"n_threads": t, "n_threads_batch": t, "n_ctx": spec.get("max_length", 1024), "n_batch": 512}
        self.llm = Llama(model_path=spec["model"], verbose=False, **self.kwargs)
        self.info = {"llama_kwargs": self.kwargs, "version": llama_cpp.__version__}
        self.decode(self.llm.tokenize(b"Hello, how are you today?", add_bos=False, special=False), 16)  # warm-up

    def _greedy(self, ids: list[int], n: int) -> tuple[float, list[float], list[int]]:
        self.llm.reset()  # n_tokens = 0: no prefix reuse, the KV cache is rewritten from position 0
        stamps, tokens = [], []
        t0 = time.perf_counter()
        for tok in self.llm.generate(ids, temp=0.0, reset=True):  # generate() itself never stops at EOS
            stamps.append(time.perf_counter())
            tokens.append(int(tok))
            if len(tokens) == n:
                break
        return t0, stamps, tokens

    def tokenize(self, text: str) -> dict[str, Any]:
        return {"ids": self.llm.tokenize(text.encode(), add_bos=False, special=False)}

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, Any]:
        t0, stamps, tokens = self._greedy(ids, new_tokens)
        return {"tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]), "ttft_s": stamps[0] - t0, "token_ids": tokens}

    def prefill(self, ids: list[int]) -> dict[str, Any]:
        t0, stamps, _ = self._greedy(ids, 1)
        return {"ttft_s": stamps[0] - t0, "tok_s": len(ids) / (stamps[0] - t0), "prompt_tokens": len(ids)}


class HFEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        from pathlib import Path

        import torch
        import transformers

        model = Path(spec["model"])
        self.torch = torch
        self.tok = transformers.AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
        self.hf = transformers.AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name,
                                                                    dtype=torch.float32).eval()
        self.hf.generation_config.eos_token_id = None
        self.hf.generation_config.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self.info = {"transformers": transformers.__version__, "dtype": "float32"}
        self.decode(self.tokenize("Hello")["ids"], 4)

    def tokenize(self, text: str) -> dict[str, Any]:
        return {"ids": list(self.tok.encode(text, add_special_tokens=False))}

    def decode(self, ids: list[int], new_tokens: int) -> dict[str, Any]:
        stamps: list[float] = []

        class Clock:  # generate() streamer: the first put() is the prompt, then one per new token
            def put(self, value: Any) -> None:
                stamps.append(time.perf_counter())

            def end(self) -> None:
                pass

        t0 = time.perf_counter()
        with self.torch.inference_mode():
            out = self.hf.generate(self.torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens,
                                   min_new_tokens=new_tokens, streamer=Clock())
        new = stamps[1:]
        return {"tok_s": (len(new) - 1) / (new[-1] - new[0]), "ttft_s": new[0] - t0,
                "token_ids": out[0, len(ids):].tolist()}


ENGINES = {"maxcli": MaxcliEngine, "llama.cpp": LlamaCppEngine, "hf": HFEngine}


def main() -> None:
    spec = json.loads(sys.argv[1])
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threads = int(spec["threads"])
    if spec["engine"] in ("maxcli", "hf"):
        import torch

        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        engine = ENGINES[spec["engine"]](spec)
    except Exception as exc:  # reported to the parent, which prints it and goes on without this engine
        proto.write(json.dumps({"error": f"load failed: {type(exc).__name__}: {str(exc)[:1000]}"}) + "\n")
        return
    proto.write(json.dumps({"ready": True, "load_s": time.perf_counter() - t0, "info": engine.info}) + "\n")
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            result = getattr(engine, cmd["op"])(**cmd.get("args", {}))
        except Exception as exc:
            result = {"error": f"{cmd['op']} failed: {type(exc).__name__}: {str(exc)[:1000]}"}
        proto.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
