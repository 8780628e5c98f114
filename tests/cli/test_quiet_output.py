"""At the default log level nothing but the answer reaches the terminal, even on a first run with an empty
cache (when transformers would print its deprecation notices while maxcli derives and caches a GGUF file's
config); `--log-level debug` shows the libraries' notices and maxcli's own logs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _fresh_cache(tmp_path: Path) -> dict[str, str]:
    """An empty MAXCLI_CACHE except for the compiled CPU kernels (compiling them is a logged ~30 s step)."""
    from maxcli.ops import cpu_ext

    built = cpu_ext.library_path()
    cache = tmp_path / "maxcli-cache"
    (cache / "cpu-ext").mkdir(parents=True)
    if built.is_file():
        shutil.copy(built, cache / "cpu-ext" / built.name)
    return {**os.environ, "MAXCLI_CACHE": str(cache)}


@pytest.mark.usefixtures("cpu_kernels")
@pytest.mark.parametrize("model", ["qwen_gguf", "smollm2_gguf"])
def test_first_run_prints_only_the_answer(model: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    path = request.getfixturevalue(model)
    env = _fresh_cache(tmp_path)  # the first run fills it; the chat and debug runs find it warm
    argv = [sys.executable, "-m", "maxcli", "generate", "--model", str(path), "--prompt", "Say hi",
            "--max-new-tokens", "4", "--json"]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert json.loads(quiet.stdout)["text"]
    chat = subprocess.run([sys.executable, "-m", "maxcli", "chat", "--model", str(path), "--max-new-tokens", "4"],
                          input="hi\n", capture_output=True, text=True, timeout=300, env=env)
    assert chat.returncode == 0 and chat.stderr == "" and chat.stdout.strip(), chat.stderr
    loud = subprocess.run([sys.executable, "-m", "maxcli", "--log-level", "debug", *argv[3:]], capture_output=True,
                          text=True, timeout=300, env=env)
    assert loud.returncode == 0 and re.search(r" (DEBUG|INFO) maxcli\.", loud.stderr), loud.stderr
