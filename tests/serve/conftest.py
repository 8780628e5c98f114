"""Server-test fixtures: start the real `maxcli serve` as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

START_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`maxcli serve ARGS` in a child process; its log goes to a file (read it in failure messages)."""

    def __init__(self, args: list[str], log_path: Path, api_key: str | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        self.log_path = log_path
        self.health_codes: list[int] = []  # every /health status seen while waiting for readiness
        cmd = [sys.executable, "-m", "maxcli", "--log-level", "info", "serve", *args, "--port", str(self.port)]
        env = {k: v for k, v in os.environ.items() if k != "MAXCLI_API_KEY"}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                code = httpx.get(f"{self.base_url}/health", timeout=2.0).status_code
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            self.health_codes.append(code)
            if code == 200:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def metric_text(self) -> str:
        return httpx.get(f"{self.base_url}/metrics", timeout=10.0).text

    def metric(self, name: str) -> float:
        text = self.metric_text()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(f"metric {name} not in /metrics")

    def wait_metric(self, name: str, value: float, timeout: float = 20.0) -> float:
        deadline = time.monotonic() + timeout
        current = self.metric(name)
        while current != value and time.monotonic() < deadline:
            time.sleep(0.1)
            current = self.metric(name)
        return current

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def tiny_custom_model(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A random-weight Llama checkpoint whose config.json names MyModelForCausalLM (custom_architectures/
    my_model), saved with safetensors, with the SmolLM2 tokenizer (and chat template) beside it."""
    from tiny_checkpoints import write_tiny_llama

    folder = tmp_path_factory.mktemp("my_model_checkpoint")
    return write_tiny_llama(folder, smollm2_gguf, architectures=["MyModelForCausalLM"], logit_scale=0.5)


REPO_ROOT = Path(__file__).resolve().parents[2]
CUSTOM_ARCHITECTURES = REPO_ROOT / "custom_architectures" / "my_model"


def start_server(tmp_path_factory: pytest.TempPathFactory, name: str, args: list[str],
                 api_key: str | None = None) -> Iterator[ServerProcess]:
    """Generator body for module-scoped fixtures: start, wait for /health 200, SIGTERM at the end."""
    log = tmp_path_factory.mktemp(name) / "server.log"
    server = ServerProcess(args, log, api_key=api_key)
    try:
        yield server.wait_ready()
    finally:
        server.terminate()
