"""Per-request timing records and the summary computed from them (throughput, latency percentiles).

Times are time.perf_counter() seconds. TTFT = first token - send; ITL = gaps between consecutive token
arrivals of one request (a step or SSE chunk carrying several tokens counts as one arrival, as in vLLM);
TPOT = (latency - TTFT) / (output tokens - 1); latency = last token (or finish) - send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

PERCENTILES = (50, 90, 99)


@dataclass
class RequestRecord:
    prompt_len: int
    output_len: int = 0  # tokens actually generated (server usage or engine count)
    sent: float = 0.0
    end: float = 0.0
    token_times: list[float] = field(default_factory=list)  # one entry per arrival of new tokens
    token_counts: list[int] = field(default_factory=list)  # tokens in each arrival (serving: estimated)
    error: Optional[str] = None

    @property
    def success(self) -> bool:
        return self.error is None and self.end > 0.0

    @property
    def ttft(self) -> Optional[float]:
        return self.token_times[0] - self.sent if self.token_times else None

    @property
    def latency(self) -> float:
        return self.end - self.sent

    @property
    def tpot(self) -> Optional[float]:
        ttft = self.ttft
        if ttft is None or self.output_len < 2:
            return None
        return (self.latency - ttft) / (self.output_len - 1)

    def itls(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]


def stats_ms(values_s: list[float]) -> dict[str, Optional[float]]:
    """mean and P50/P90/P99 in milliseconds (linear interpolation, so p50 <= p90 <= p99); None if empty."""
    import numpy as np

    keys = ["mean"] + [f"p{p}" for p in PERCENTILES]
    if not values_s:
        return {k: None for k in keys}
    arr = np.asarray(values_s, dtype=np.float64) * 1e3
    out = {"mean": round(float(arr.mean()), 3)}
    for p, v in zip(PERCENTILES, np.percentile(arr, PERCENTILES)):
        out[f"p{p}"] = round(float(v), 3)
    return out


def summarize(records: list[RequestRecord], start: float) -> dict[str, Any]:
    """The result fields shared by both modes. duration = start .. the last request's end."""
    ok = [r for r in records if r.success]
    ends = [r.end for r in records if r.end > 0.0]
    duration = max(ends) - start if ends else 0.0
    n_in = sum(r.prompt_len for r in ok)
    n_out = sum(r.output_len for r in ok)
    per_s = (lambda x: round(x / duration, 3)) if duration > 0 else (lambda x: 0.0)
    errors: dict[str, int] = {}
    for r in records:
        if not r.success:
            msg = r.error or "did not finish"
            errors[msg] = errors.get(msg, 0) + 1
    return {
        "completed": len(ok),
        "failed": len(records) - len(ok),
        "duration_s": round(duration, 4),
        "total_input_tokens": n_in,
        "total_output_tokens": n_out,
        "request_throughput": per_s(len(ok)),
        "input_throughput": per_s(n_in),
        "output_throughput": per_s(n_out),
        "total_token_throughput": per_s(n_in + n_out),
        "ttft_ms": stats_ms([t for r in ok if (t := r.ttft) is not None]),
        "tpot_ms": stats_ms([t for r in ok if (t := r.tpot) is not None]),
        "itl_ms": stats_ms([g for r in ok for g in r.itls()]),
        "e2el_ms": stats_ms([r.latency for r in ok]),
        "errors": [{"message": m, "count": c} for m, c in list(errors.items())[:5]],
    }
