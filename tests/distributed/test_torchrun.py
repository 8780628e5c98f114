"""Multi-node style launch: `torchrun --nproc-per-node 2 -m maxcli generate --tensor-parallel-size 2` (every
rank runs the same command; rank 0 prints, rank 1 serves its steps) gives the tokens of a one-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ARGS = ["generate", "--prompt", "The capital of France is", "--max-new-tokens", "8", "--temperature", "0",
        "--no-chat-template", "--json", "--max-length", "64"]


def run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_torchrun_two_ranks_match_one_process(smollm2_gguf: Path) -> None:
    single = run([sys.executable, "-m", "maxcli", *ARGS, "--model", str(smollm2_gguf)])
    assert single.returncode == 0, single.stderr
    torchrun = Path(sys.executable).with_name("torchrun")
    launched = run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "maxcli", *ARGS,
                    "--model", str(smollm2_gguf), "--tensor-parallel-size", "2"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    lines = [ln for ln in launched.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1  # only rank 0 prints
    assert json.loads(lines[0])["token_ids"] == json.loads(single.stdout)["token_ids"]
