"""Check that each file under examples/seeds/ is its seed page's code example with `max.` -> `maxcli.`.

    python scripts/check_seed_examples.py [SEEDS_DIR]     (default: ../shared/seeds from the repo root)

A file's example part is everything after its leading comment block, or after a `# -- the guide` /
`# -- the page` marker when the file first supplies names the page uses without defining; lines that
fill in a page's `# ... other fields ...` placeholder follow that comment up to the next page line. The
one other allowed edit, a local model file instead of the hub id, is mapped back before comparing. The
example part's non-blank lines must appear, in order and contiguous, among the page's lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "seeds"
PAGES = {"guide": "max-model-pipeline-guide.txt", "registry": "max-pipelines-registry.txt", "my_model": "max-model-pipeline-guide.txt"}
LOCAL_MODEL = ('"SmolLM2-135M-Instruct.Q4_1.gguf"', '"meta-llama/Llama-3.1-8B-Instruct"')
FILLED_IN = "# ... other fields ..."


def example_lines(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    markers = [i for i, ln in enumerate(lines) if ln.startswith(("# -- the guide", "# -- the page"))]
    if markers:
        lines = lines[markers[-1] + 1:]
    elif path.suffix in (".py", ".sh"):
        start = 0
        while start < len(lines) and (lines[start].startswith("#") or not lines[start].strip()):
            start += 1
        lines = lines[start:]
    out, filling = [], False
    for ln in lines:
        s = ln.strip()
        if filling and not s.startswith(("context_validators", ")")):
            continue
        filling = s == FILLED_IN
        if s:
            out.append(s.replace(*LOCAL_MODEL).replace('"$@"', "path/to/weights"))
    return out


def page_lines(text: str) -> list[str]:
    return [ln.strip().replace("max.", "maxcli.").replace("max serve", "maxcli serve") for ln in text.splitlines() if ln.strip()]


def contiguous_in(needle: list[str], haystack: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def main() -> int:
    seeds = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO.parent / "shared" / "seeds"
    failures = 0
    files = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".py", ".sh") and "__pycache__" not in p.parts)
    for path in files:
        rel = path.relative_to(EXAMPLES)
        if rel.parts[0] == "my_model" and rel.name == "model.py":
            print(f"skip   {rel} (the guide leaves my_model/model.py to the reader)")
            continue
        key = rel.parts[0] if rel.parts[0] == "my_model" else rel.name.split("_")[0]
        page = page_lines((seeds / PAGES[key]).read_text())
        ok = contiguous_in(example_lines(path), page)
        failures += not ok
        print(f"{'ok' if ok else 'DIFFERS':6} {rel} <- {PAGES[key]}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
