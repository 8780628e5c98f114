"""The CLI's error contract, checked the same way by every CLI test: a non-zero exit and one line on
stderr that starts with "error: ", no traceback."""

from __future__ import annotations

import subprocess


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    assert r.returncode != 0, r
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    for f in fragments:
        assert f in err, err
