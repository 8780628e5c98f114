"""Rich consoles for the CLI. Piped output gets a wide fixed width so tables are not folded at 80 columns."""

from __future__ import annotations

import sys
from typing import Any


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)
