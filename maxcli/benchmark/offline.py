"""Offline mode: requests go straight into an in-process LLMEngine; timestamps come from its steps.

Requests are admitted at their arrival offsets (all at once for an infinite rate) and while fewer than
max_concurrency are in flight; the engine's own max_batch_size still bounds each step's batch. One
engine step produces one token per running request (several with speculative decoding), so each step
output is one token arrival.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable, Optional

from maxcli.benchmark.dataset import BenchRequest
from maxcli.benchmark.metrics import RequestRecord


def _new_context(engine: Any, prompt: Any, params: Any) -> Any:
    from maxcli.interfaces import RequestID, TextGenerationRequest

    request = TextGenerationRequest(request_id=RequestID(), model_name=engine.config.model_name, sampling_params=params)
    request.prompt = prompt
    return engine.new_context(request)


def warm_up(engine: Any, request: BenchRequest, params: Any) -> None:
    """One untimed request run to completion: first-call allocations and lazy init."""
    engine.add_context(_new_context(engine, request.prompt, params))
    while engine.has_unfinished:
        engine.step()


def run_offline(
    engine: Any,
    requests: list[BenchRequest],
    arrivals: list[float],
    max_concurrency: Optional[int],
    params_for: Callable[[BenchRequest], Any],
) -> tuple[list[RequestRecord], float]:
    """Run every request to completion; (records in request order, start time). A prompt the engine
    rejects (too long, bad token) is a failed record, not an abort of the whole run."""
    from maxcli.interfaces import InputError

    records = [RequestRecord(prompt_len=r.prompt_len) for r in requests]
    contexts: dict[int, Any] = {}
    for i, r in enumerate(requests):
        try:
            contexts[i] = _new_context(engine, r.prompt, params_for(r))
        except InputError as e:
            records[i].error = str(e)
    pending = deque(sorted(contexts, key=lambda i: arrivals[i]))
    running: dict[Any, int] = {}
    start = time.perf_counter()
    try:
        while pending or running:
            now = time.perf_counter()
            while pending and start + arrivals[pending[0]] <= now and (max_concurrency is None or len(running) < max_concurrency):
                i = pending.popleft()
                engine.add_context(contexts[i])
                running[contexts[i].request_id] = i
                records[i].sent = now
            if not running:
                time.sleep(max(0.0, start + arrivals[pending[0]] - time.perf_counter()))
                continue
            outputs = engine.step()
            t = time.perf_counter()
            for out in outputs:
                i = running.get(out.request_id)
                if i is None:
                    continue
                rec = records[i]
                if out.new_token_ids:
                    rec.token_times.append(t)
                    rec.token_counts.append(len(out.new_token_ids))
                if out.finished:
                    ctx = contexts[i]
                    rec.end = t
                    rec.prompt_len = ctx.prompt_len
                    rec.output_len = ctx.num_output_tokens
                    del running[out.request_id]
    except BaseException:
        for rid in running:
            engine.abort(rid)
        raise
    return records, start
