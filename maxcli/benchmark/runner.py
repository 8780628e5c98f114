"""Both modes end to end: check inputs (cheap failures first), build requests, run, summarize."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from maxcli.benchmark import BenchmarkError
from maxcli.benchmark.dataset import (
    BenchRequest,
    arrival_offsets,
    random_requests,
    read_sharegpt,
    sharegpt_requests,
    token_counter,
    vocabulary,
)
from maxcli.benchmark.metrics import RequestRecord, summarize

DEFAULT_INPUT_LEN = 128
DEFAULT_OUTPUT_LEN = 64
WARMUP_TOKENS = 4


@dataclass
class BenchmarkSpec:
    num_prompts: int
    input_len: Optional[int]
    output_len: Optional[int]
    dataset: Optional[Path]
    request_rate: float
    max_concurrency: Optional[int]
    seed: int
    num_warmups: int = 1
    base_url: Optional[str] = None
    tokenizer: Optional[str] = None
    api_key: Optional[str] = None


@dataclass
class BenchmarkRun:
    result: dict[str, Any]
    records: list[RequestRecord]
    start: float


def _requests(spec: BenchmarkSpec, tokenizer: Any, pairs: Optional[list]) -> list[BenchRequest]:
    if pairs is not None:
        return sharegpt_requests(
            pairs, token_counter(tokenizer), spec.num_prompts, spec.output_len, spec.seed,
            max_length=getattr(tokenizer, "max_length", None),
        )
    vocab, special = vocabulary(tokenizer)
    return random_requests(
        vocab, special, spec.num_prompts, spec.input_len or DEFAULT_INPUT_LEN, spec.output_len or DEFAULT_OUTPUT_LEN, spec.seed
    )


def _header(spec: BenchmarkSpec, mode: str, model: str, requests: list[BenchRequest]) -> dict[str, Any]:
    return {
        "mode": mode,
        "model": model,
        "base_url": spec.base_url,
        "dataset": str(spec.dataset) if spec.dataset else "random",
        "num_prompts": len(requests),
        "input_len": None if spec.dataset else requests[0].prompt_len,
        "output_len": spec.output_len if spec.dataset else requests[0].output_len,
        "request_rate": spec.request_rate if math.isfinite(spec.request_rate) else "inf",
        "max_concurrency": spec.max_concurrency,
        "seed": spec.seed,
    }


def run_offline_benchmark(config: Any, spec: BenchmarkSpec) -> BenchmarkRun:
    pairs = read_sharegpt(spec.dataset) if spec.dataset else None  # a bad file fails before torch loads
    from maxcli.benchmark.offline import run_offline, warm_up
    from maxcli.pipelines.lib.entrypoints import load_engine

    # The batch never needs more rows than requests can be in flight; a smaller batch means a smaller
    # KV cache to allocate and zero.
    in_flight = min(spec.num_prompts, spec.max_concurrency or spec.num_prompts)
    config = config.model_copy(update={"max_batch_size": min(config.max_batch_size, in_flight)})
    t0 = time.perf_counter()
    engine = load_engine(config)
    load_s = time.perf_counter() - t0
    requests = _requests(spec, engine.tokenizer, pairs)
    params = {}

    def params_for(r: BenchRequest) -> Any:
        if r.output_len not in params:
            params[r.output_len] = engine.config.sampling_params(max_new_tokens=r.output_len, ignore_eos=True)
        return params[r.output_len]

    if spec.num_warmups:
        # Fresh random tokens, not a benchmark prompt: with prefix caching a reused prompt would be cached.
        vocab, special = vocabulary(engine.tokenizer)
        warm = random_requests(vocab, special, spec.num_warmups, requests[0].prompt_len, WARMUP_TOKENS, spec.seed + 1)
        for w in warm:
            warm_up(engine, w, engine.config.sampling_params(max_new_tokens=WARMUP_TOKENS, ignore_eos=True))
    arrivals = arrival_offsets(len(requests), spec.request_rate, spec.seed)
    records, start = run_offline(engine, requests, arrivals, spec.max_concurrency, params_for)
    result = {**_header(spec, "offline", engine.config.model_name, requests), "load_s": round(load_s, 3)}
    result.update(summarize(records, start))
    if engine.speculator is not None:
        result["speculative_decoding"] = engine.speculator.stats.to_dict()
    return BenchmarkRun(result, records, start)


def run_serving_benchmark(config: Any, spec: BenchmarkSpec) -> BenchmarkRun:
    from maxcli.benchmark.serving import normalize_base_url, run_serving, served_models

    base_url = normalize_base_url(spec.base_url or "")
    pairs = read_sharegpt(spec.dataset) if spec.dataset else None
    models = served_models(base_url, spec.api_key)
    model = config.served_model_name or config.model_path or (models[0] if models else "")
    if model not in models:
        raise BenchmarkError(f"{base_url} serves {', '.join(models) or 'no model'}, not {model!r} (see --model)")
    tokenizer = _load_tokenizer(spec.tokenizer or config.model_path or model)
    requests = _requests(spec, tokenizer, pairs)
    arrivals = arrival_offsets(len(requests), spec.request_rate, spec.seed)
    records, start = run_serving(base_url, model, requests, arrivals, spec.max_concurrency, spec.api_key)
    result = _header(spec, "serving", model, requests)
    result["base_url"] = base_url
    result.update(summarize(records, start))
    return BenchmarkRun(result, records, start)


def _load_tokenizer(source: str) -> Any:
    """The client side needs the model's tokenizer (vocabulary for random prompts, counts for ShareGPT)."""
    from maxcli.pipelines.lib.tokenizer import TextTokenizer, TokenizerLoadError

    try:
        return TextTokenizer(source)
    except TokenizerLoadError as e:
        raise BenchmarkError(f"{e} (pass --tokenizer PATH: the model's folder, repo id or .gguf file)") from None


def run_benchmark(config: Any, spec: BenchmarkSpec) -> BenchmarkRun:
    """Serving mode when spec.base_url is set, else offline."""
    return run_serving_benchmark(config, spec) if spec.base_url else run_offline_benchmark(config, spec)
