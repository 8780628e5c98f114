"""Subprocesses under a memory watchdog, for benchmarks that may not fit this machine.

A 7B model dequantized to float32 needs ~28 GB; on a 24 GB machine shared with other jobs such a process
must be stopped before the kernel's OOM killer picks a victim. `Watchdog` polls a child's RSS and the
machine's MemAvailable and kills the child past either limit; `run_watched` spawns a command, times its
first stdout byte (the first streamed token of `maxcli generate`) and returns its peak RSS (os.wait4).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GB = 1e9
KILL_RSS_BYTES = int(16 * GB)  # default per-process cap (compare.py --rss-kill-gb)
MIN_AVAILABLE_BYTES = int(1.5 * GB)  # kill the child when the machine has less than this left


def rss_bytes(pid: int) -> int:
    """Current resident set size of pid (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


class Watchdog(threading.Thread):
    """Kills `pid` when its RSS passes rss_limit or MemAvailable drops under MIN_AVAILABLE_BYTES."""

    def __init__(self, pid: int, rss_limit: int = KILL_RSS_BYTES, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.rss_limit, self.interval = pid, rss_limit, interval
        self.reason: str | None = None
        self.peak_seen = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            rss = rss_bytes(self.pid)
            if rss == 0 and not Path(f"/proc/{self.pid}").exists():
                return
            self.peak_seen = max(self.peak_seen, rss)
            avail = mem_available()
            if rss > self.rss_limit or avail < MIN_AVAILABLE_BYTES:
                self.reason = (f"killed by the benchmark's watchdog at RSS {rss / GB:.1f} GB "
                               f"(cap {self.rss_limit / GB:.1f} GB; machine MemAvailable {avail / GB:.1f} GB)")
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()


def wait_rusage(proc: subprocess.Popen) -> tuple[int, int, float]:
    """Reap proc: (exit code, peak RSS bytes, CPU seconds) from os.wait4."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime


def run_watched(cmd: list[str], rss_limit: int = KILL_RSS_BYTES, env: dict[str, str] | None = None,
                timeout: float = 1800.0) -> dict[str, Any]:
    """Run cmd to the end: seconds to its first stdout byte and to exit, peak RSS, CPU seconds, stdout,
    stderr; `error` is set when it failed or was killed (by the watchdog or the timeout)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    dog = Watchdog(proc.pid, rss_limit)
    dog.start()
    timer = threading.Timer(timeout, lambda: proc.kill())
    timer.start()
    err_chunks: list[bytes] = []
    err_reader = threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True)
    err_reader.start()
    first = proc.stdout.read(1)
    t_first = time.perf_counter()
    rest = proc.stdout.read()
    err_reader.join()
    code, peak, cpu = wait_rusage(proc)
    t_exit = time.perf_counter()
    timer.cancel()
    dog.stop()
    out = {
        "ttft_s": t_first - t0,
        "exit_s": t_exit - t0,
        "peak_rss_bytes": max(peak, dog.peak_seen),
        "cpu_s": cpu,
        "stdout": (first + rest).decode(errors="replace"),
        "stderr": b"".join(err_chunks).decode(errors="replace"),
        "returncode": code,
    }
    if dog.reason or code != 0 or not first:
        why = dog.reason or ("timed out" if t_exit - t0 >= timeout else f"exit {code}")
        out["error"] = f"{why}: {out['stderr'].strip()[-800:]}" if not dog.reason else why
    return out
