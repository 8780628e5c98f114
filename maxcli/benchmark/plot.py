"""--plot: histograms of TTFT, TPOT, ITL and latency, output tok/s and requests in flight over time.

matplotlib is optional (the `bench` extra); require_matplotlib() is called before the run so a missing
install fails in a second, not after the benchmark. Figures are drawn with the object API (no pyplot
state, no GUI backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxcli.benchmark import BenchmarkError
from maxcli.benchmark.metrics import RequestRecord

BINS = 30


def require_matplotlib(path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise BenchmarkError("--plot needs matplotlib, which is not installed: pip install matplotlib")
    if not path.parent.is_dir():
        raise BenchmarkError(f"--plot: folder {path.parent} does not exist")


def _hist(ax: Any, values_ms: list[float], title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("ms")
    ax.set_ylabel("count")
    if not values_ms:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        return
    ax.hist(values_ms, bins=BINS, color="tab:blue", alpha=0.8)
    mean = sum(values_ms) / len(values_ms)
    ax.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.1f}")
    ax.legend(fontsize="small")


def save_plot(path: Path, records: list[RequestRecord], start: float, title: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    ok = [r for r in records if r.success]
    fig = Figure(figsize=(15, 8.5), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(2, 3)
    _hist(axes[0, 0], [r.ttft * 1e3 for r in ok if r.ttft is not None], "time to first token")
    _hist(axes[0, 1], [r.tpot * 1e3 for r in ok if r.tpot is not None], "time per output token")
    _hist(axes[0, 2], [g * 1e3 for r in ok for g in r.itls()], "inter-token latency")
    _hist(axes[1, 0], [r.latency * 1e3 for r in ok], "end-to-end latency")

    times = np.asarray([t - start for r in ok for t in r.token_times])
    counts = np.asarray([c for r in ok for c in r.token_counts])
    duration = max((r.end for r in ok), default=start) - start
    ax = axes[1, 1]
    ax.set_title("output throughput")
    ax.set_xlabel("s since start")
    ax.set_ylabel("tok/s")
    if duration > 0 and times.size:
        # about two arrivals per bin, at most 40 bins: narrower bins than the step time would show gaps
        n_bins = max(1, min(40, len(np.unique(times)) // 2))
        width = duration / n_bins
        edges = np.arange(0.0, duration + width, width)
        tokens, _ = np.histogram(times, bins=edges, weights=counts)
        ax.step(edges[:-1], tokens / width, where="post", color="tab:green")

    ax = axes[1, 2]
    ax.set_title("requests in flight")
    ax.set_xlabel("s since start")
    events = sorted([(r.sent - start, 1) for r in records if r.sent] + [(r.end - start, -1) for r in records if r.end])
    if events:
        xs, level, ys = [0.0], 0, [0]
        for t, d in events:
            level += d
            xs.append(t)
            ys.append(level)
        ax.step(xs, ys, where="post", color="tab:purple")
    try:
        fig.savefig(path, dpi=100)
    except (ValueError, OSError) as e:
        raise BenchmarkError(f"cannot write the plot {path}: {e}") from None
