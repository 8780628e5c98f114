"""Logprobs in OpenAI's two shapes: chat (`content: [{token, logprob, bytes, top_logprobs}]`) and
completions (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), with token ids shown as text."""

from __future__ import annotations

from typing import Any

from maxcli.pipelines.core import TextContext

Entry = tuple[float, dict[int, float]]  # (logprob of the chosen token, top alternatives id -> logprob)


class TokenTexts:
    """Token id -> its text (decoded alone, special tokens kept), memoized per reply."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = getattr(tokenizer, "delegate", tokenizer)
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self._tok.decode([token_id], skip_special_tokens=False)
        return text

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


def visible_output_count(ctx: TextContext) -> int:
    """Output tokens that belong to the text: all but a final eos / stop token that ended the request."""
    n = ctx.num_output_tokens
    if n == 0 or ctx.status.finish_reason != "stop":
        return n
    sp, last = ctx.sampling_params, ctx.tokens[-1]
    is_stop_token = last in sp.stop_token_ids or (last in ctx.eos_token_ids and not sp.ignore_eos)
    return n - 1 if is_stop_token else n


def _sorted_top(top: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(top.items(), key=lambda kv: -kv[1])


def chat_logprobs(texts: TokenTexts, ids: list[int], entries: list[Entry]) -> list[dict[str, Any]]:
    out = []
    for tok, (lp, top) in zip(ids, entries):
        text = texts(tok)
        out.append({
            "token": text,
            "logprob": lp,
            "bytes": list(text.encode("utf-8")),
            "top_logprobs": [
                {"token": texts(t), "logprob": v, "bytes": list(texts(t).encode("utf-8"))} for t, v in _sorted_top(top)
            ],
        })
    return out


def completion_logprobs(
    texts: TokenTexts,
    ctx: TextContext,
    echo: bool,
    output_count: int | None = None,
    output_ids: list[int] | None = None,
    output_entries: list[Entry] | None = None,
) -> dict[str, Any]:
    """The completions logprobs object: the prompt's tokens first when echo is set (the first prompt token
    has no logprob: nothing precedes it), then the output tokens given (or the first output_count ones)."""
    tokens: list[int] = []
    chosen: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    if echo:
        prompt = ctx.prompt_tokens
        plog = ctx.prompt_log_probabilities
        tokens.extend(prompt)
        chosen.append(None)
        tops.append(None)
        for i in range(1, len(prompt)):
            have = plog is not None and i - 1 < len(plog.token_log_probabilities)
            chosen.append(plog.token_log_probabilities[i - 1] if have else None)  # type: ignore[union-attr]
            tops.append(_top_by_text(texts, plog.top_log_probabilities[i - 1]) if have else None)  # type: ignore[union-attr]
    if output_ids is None:
        log = ctx.log_probabilities
        count = ctx.num_output_tokens if output_count is None else output_count
        output_ids = ctx.output_token_ids[:count]
        output_entries = list(zip(log.token_log_probabilities, log.top_log_probabilities))[:count] if log else []
    for tok, (lp, top) in zip(output_ids, output_entries or []):
        tokens.append(tok)
        chosen.append(lp)
        tops.append(_top_by_text(texts, top))
    strings = [texts(t) for t in tokens]
    offsets, pos = [], 0
    for s in strings:
        offsets.append(pos)
        pos += len(s)
    return {"tokens": strings, "token_logprobs": chosen, "top_logprobs": tops, "text_offset": offsets}


def _top_by_text(texts: TokenTexts, top: dict[int, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for t, v in _sorted_top(top):
        out.setdefault(texts(t), v)  # two ids with the same text: keep the likelier
    return out
