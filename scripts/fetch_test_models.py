"""Download the real test models (SmolLM2-135M Q4_1 GGUF, all-MiniLM-L6-v2, Qwen2.5-Coder-0.5B-Instruct
Q4_K_M GGUF) into $MAXCLI_TEST_MODELS (default <repo>/.cache/test-models). Safe to re-run: present models
are skipped."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maxcli.weights.test_models import TestModelFetchError, cache_dir, fetch_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dest", type=Path, default=None, help=f"cache folder (default {cache_dir()})")
    args = parser.parse_args()
    try:
        paths = fetch_all(args.dest)
    except TestModelFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
