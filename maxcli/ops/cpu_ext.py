"""maxcli's C++ CPU extension (csrc/*.cpp: GGUF block matmuls, the fused decode step), built on first use.

The sources are compiled together, once per (sources, flags, torch version, CPU flags), with the system
C++ compiler into $MAXCLI_CACHE/cpu-ext (default ~/.cache/maxcli/cpu-ext): ~30 s, then loaded in ~10 ms.
`maxcli warm-cache` builds it ahead of time. Nothing is compiled at `pip install`. Without a compiler, or
with MAXCLI_CPU_EXT=0, `load()` returns False after one warning and callers keep their torch paths.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "gguf_matmul.cpp", CSRC / "decode_step.cpp", CSRC / "token_bitmask.cpp")
HEADERS = (CSRC / "gguf_blocks.h",)
CXXFLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fopenmp"]
_state: dict[str, object] = {}


def _cache_dir() -> Path:
    base = os.environ.get("MAXCLI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "maxcli")
    return Path(base) / "cpu-ext"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def library_path() -> Path:
    digest = hashlib.sha256()
    for src in SOURCES + HEADERS:
        digest.update(src.read_bytes())
    for part in (" ".join(CXXFLAGS), torch.__version__, _cpu_flags(), platform.machine()):
        digest.update(part.encode())
    return _cache_dir() / f"maxcli_cpu_{digest.hexdigest()[:16]}.so"


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _compile(target: Path) -> None:
    from torch.utils.cpp_extension import include_paths, library_paths

    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (c++ / g++) on PATH")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    libs = library_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [cxx, *CXXFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", *map(str, SOURCES), "-o", str(out)]
        cmd += [f"-I{sysconfig.get_paths()['include']}", *(f"-I{p}" for p in include_paths())]
        cmd += [f"-L{p}" for p in libs] + [f"-Wl,-rpath,{p}" for p in libs]
        cmd += ["-lc10", "-ltorch_cpu", "-ltorch"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling the CPU extension failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        os.replace(out, target)  # atomic: concurrent loaders see the whole library or none


def load() -> bool:
    """Load (compiling once if needed) the extension; False, with one warning, when it cannot be had."""
    if "loaded" not in _state:
        _state["loaded"] = False
        if os.environ.get("MAXCLI_CPU_EXT", "1") == "0":
            logger.warning("MAXCLI_CPU_EXT=0: the C++ CPU kernels are off, GGUF weights run dequantized")
            return False
        try:
            path = library_path()
            if not path.is_file():
                logger.warning("compiling maxcli's CPU kernels (once, ~30 s; cached in %s)", path.parent)
                _compile(path)
            torch.ops.load_library(str(path))
            _state["loaded"] = True
        except Exception as exc:  # no compiler, no headers, a failed build: the torch paths still run
            _state["error"] = str(exc)
            logger.warning("maxcli's C++ CPU kernels are unavailable, GGUF weights run dequantized: %s", exc)
    return bool(_state["loaded"])


def is_loaded() -> bool:
    """Whether the library is loaded in this process (a check only: never builds or loads it)."""
    return bool(_state.get("loaded"))


def unavailable_reason() -> str | None:
    """Why `load()` returned False (None when it has not failed)."""
    return _state.get("error")  # type: ignore[return-value]


def reset() -> None:
    """Forget the load outcome (tests toggle MAXCLI_CPU_EXT); an already loaded library stays loaded."""
    _state.clear()
