"""`maxcli benchmark`: offline (in-process engine) and serving (OpenAI-compatible HTTP) load tests.

dataset.py builds the requests (random token prompts or ShareGPT), offline.py and serving.py run them and
record per-request timestamps, metrics.py turns those records into throughput and latency percentiles,
plot.py draws them. Heavy libraries (torch, httpx, numpy, matplotlib) are imported inside functions.
"""

from __future__ import annotations


class BenchmarkError(RuntimeError):
    """A benchmark that cannot run or produced nothing; the CLI prints its one-line message."""
