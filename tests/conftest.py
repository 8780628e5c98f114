"""Shared fixtures: the real test models (fetched once into the cache by maxcli.weights.test_models).

Also the CI skip policy: with MAXCLI_FAIL_ON_SKIP=1 (set by .ci/run) a session that skipped anything fails,
unless every skip's reason names a missing GPU (contains "CUDA" or "GPU") or a missing C++ compiler
(contains "C++ compiler"). Tests that skip for those reasons must say so in their reason.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

# Triton decides interpreter mode when it is first imported (its own library kernels are jit-decorated
# then), so it must be set before any test module or library imports triton: here, at session start.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from maxcli.weights.test_models import fetch_minilm, fetch_qwen25_coder, fetch_smollm2


@pytest.fixture(scope="session", autouse=True)
def cpu_kernels_built() -> None:
    """Build maxcli's C++ CPU kernels once before any test (~30 s on a fresh machine), so no test's
    subprocess prints the one-time "compiling" notice into the stderr it checks."""
    from maxcli.ops import cpu_ext

    if cpu_ext.compiler() is not None:
        cpu_ext.load()


@pytest.fixture(scope="session")
def cpu_kernels(cpu_kernels_built: None) -> None:
    """For tests of the C++ kernels themselves: they skip (an allowed reason) without a compiler, and fail
    when a compiler is there but the build does not load."""
    from maxcli.ops import cpu_ext

    if cpu_ext.compiler() is None:
        pytest.skip("no C++ compiler: the GGUF CPU kernels cannot be built")
    assert cpu_ext.load(), cpu_ext.unavailable_reason()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF (llama architecture, tokenizer and chat template inside)."""
    return fetch_smollm2()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 folder: BertModel safetensors, tokenizer, sentence-transformers files."""
    return fetch_minilm()


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (qwen2 architecture, tokenizer and chat template inside)."""
    return fetch_qwen25_coder()


# --- CI skip policy -------------------------------------------------------------------------------------

ALLOWED_SKIP = re.compile(r"\b(CUDA|GPU)\b|C\+\+ compiler", re.IGNORECASE)
_disallowed_skips: list[tuple[str, str]] = []


def _fail_on_skip() -> bool:
    return os.environ.get("MAXCLI_FAIL_ON_SKIP") == "1"


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: reason")
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def _record_skip(report: pytest.CollectReport | pytest.TestReport) -> None:
    if not _fail_on_skip() or not report.skipped or hasattr(report, "wasxfail"):  # an xfail is no skip
        return
    reason = _skip_reason(report)
    if not ALLOWED_SKIP.search(reason):
        _disallowed_skips.append((report.nodeid, reason))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record_skip(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record_skip(report)  # a module-level pytest.skip / importorskip


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _disallowed_skips and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _disallowed_skips:
        return
    terminalreporter.section("skips not allowed (MAXCLI_FAIL_ON_SKIP=1)", sep="=", red=True, bold=True)
    for nodeid, reason in _disallowed_skips:
        terminalreporter.line(f"SKIPPED {nodeid or '<session>'}: {reason}", red=True)
    terminalreporter.line(
        f"{len(_disallowed_skips)} skip(s) fail this run: only a missing GPU (CUDA) or C++ compiler may skip a test"
    )
