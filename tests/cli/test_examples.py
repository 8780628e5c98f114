"""Every file in examples/ runs as documented, on the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=REPO)


def test_offline_batch_example(smollm2_gguf):
    r = run([sys.executable, str(EXAMPLES / "offline_batch.py"), str(smollm2_gguf)])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and "Paris" in lines[0]


def test_generate_script_with_yaml_sections(smollm2_gguf):
    r = run(["bash", str(EXAMPLES / "generate.sh"), str(smollm2_gguf)])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["metrics"]["output_tokens"] <= 32 and out["text"]  # max_new_tokens from the `quick` section
