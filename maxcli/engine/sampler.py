"""Token selection for a batch: logit bias and grammar masks -> penalties -> temperature -> min-p / top-k /
top-p -> exponential race.

Every stage is one batched tensor op over the rows that need it; rows without penalties skip the
penalty stage and greedy rows (temperature 0 or top_k 1) take an exact argmax. Sampling draws
q ~ Exp(1) per vocab entry and picks argmax(p / q), which selects token i with probability p_i.
Seeded requests own a torch.Generator (in context.extra) so their draws do not depend on the batch.
A row that verifies a drafted token d (speculative decoding) keeps d with probability p(d) and otherwise
draws from p without d: exact rejection sampling for a point-mass draft; greedy rows take the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch

from maxcli.interfaces import LogProbabilities

if TYPE_CHECKING:
    from maxcli.engine.structured import TokenMasks
    from maxcli.pipelines.core.context import TextContext

_GENERATOR_KEY = "sampler_generator"
_TOKEN_STATS_KEY = "sampler_token_stats"


@dataclass
class _TokenStats:
    """Per-request prompt-token mask and output-token counts [V], updated with the tokens appended since."""

    prompt_mask: torch.Tensor
    output_counts: torch.Tensor
    num_seen: int = 0


@dataclass
class SamplerOutput:
    """token_ids [B] int64 on CPU; logprobs[i] = (sampled token's logprob, {top id: logprob}) or None."""

    token_ids: torch.Tensor
    logprobs: list[tuple[float, dict[int, float]] | None]


def _token_stats(ctx: "TextContext", vocab_size: int, device: torch.device) -> _TokenStats:
    stats = ctx.extra.get(_TOKEN_STATS_KEY)
    if stats is None or stats.num_seen > len(ctx.tokens) or stats.prompt_mask.shape[0] != vocab_size:
        stats = _TokenStats(
            prompt_mask=torch.zeros(vocab_size, dtype=torch.bool, device=device),
            output_counts=torch.zeros(vocab_size, dtype=torch.float32, device=device),
        )
        ctx.extra[_TOKEN_STATS_KEY] = stats
    if stats.num_seen < len(ctx.tokens):
        new = ctx.tokens[stats.num_seen :]
        split = max(0, ctx.prompt_len - stats.num_seen)
        if split:
            stats.prompt_mask[torch.tensor(new[:split], dtype=torch.int64, device=device)] = True
        if len(new) > split:
            out = torch.tensor(new[split:], dtype=torch.int64, device=device)
            stats.output_counts.index_add_(0, out, torch.ones(out.shape[0], device=device))
        stats.num_seen = len(ctx.tokens)
    return stats


def _request_generator(ctx: "TextContext", device: torch.device) -> torch.Generator:
    gen = ctx.extra.get(_GENERATOR_KEY)
    if gen is None or gen.device != device:
        gen = torch.Generator(device=device)
        gen.manual_seed(int(ctx.sampling_params.seed))  # type: ignore[arg-type]
        ctx.extra[_GENERATOR_KEY] = gen
    return gen


def _column(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=like.device)[:, None]


def apply_penalties(logits: torch.Tensor, contexts: Sequence["TextContext"]) -> None:
    """In place. Repetition (HF: over prompt + output; x/r if x >= 0 else x*r), then frequency and
    presence (OpenAI: over output tokens; x -= f * count + p * [count > 0])."""
    V = logits.shape[1]
    stats = [_token_stats(c, V, logits.device) for c in contexts]
    counts = torch.stack([s.output_counts for s in stats])
    present = counts > 0
    sps = [c.sampling_params for c in contexts]
    rep = _column([sp.repetition_penalty for sp in sps], logits)
    seen = torch.stack([s.prompt_mask for s in stats]) | present
    penalized = torch.where(logits < 0, logits * rep, logits / rep)
    # a penalty near 0 (float32 rounds 5e-324 to 0) would make scores infinite, and softmax NaN
    finfo = torch.finfo(logits.dtype)
    penalized = torch.nan_to_num(penalized, nan=0.0, posinf=finfo.max, neginf=finfo.min)
    logits.copy_(torch.where(seen, penalized, logits))
    logits -= _column([sp.frequency_penalty for sp in sps], logits) * counts
    logits -= _column([sp.presence_penalty for sp in sps], logits) * present


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Drop tokens whose probability is below min_p [R, 1] times the row's top probability."""
    probs = torch.softmax(logits, dim=-1)
    return logits.masked_fill(probs < min_p * probs.amax(dim=-1, keepdim=True), float("-inf"))


def apply_top_k(logits: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Keep tokens scoring at least the k-th best (ties at the k-th value are kept); top_k [R, 1] int64."""
    kth = torch.topk(logits, int(top_k.max()), dim=-1).values.gather(1, top_k - 1)  # no full sort of V
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches top_p [R, 1] (always >= 1)."""
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = cum <= 1 - top_p
    drop_sorted[:, -1] = False
    drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


class Sampler:
    def __init__(self, seed: int | None = None) -> None:
        """`seed` fixes the shared generator of unseeded requests (tests); None draws a random seed."""
        self._seed = seed
        self._shared: dict[torch.device, torch.Generator] = {}

    def _shared_generator(self, device: torch.device) -> torch.Generator:
        gen = self._shared.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            if self._seed is None:
                gen.seed()
            else:
                gen.manual_seed(self._seed)
            self._shared[device] = gen
        return gen

    def __call__(
        self, logits: torch.Tensor, contexts: Sequence["TextContext"], masks: "TokenMasks | None" = None,
        drafts: Sequence[int] | None = None,
    ) -> SamplerOutput:
        """`masks`: structured-output token masks of some rows (maxcli.engine.structured), computed while
        the forward pass ran; rows without a constraint skip every step of their own. `drafts`: per row,
        the drafted token it verifies (-1: none); a context may own several consecutive rows."""
        if logits.dim() != 2 or logits.shape[0] != len(contexts):
            raise ValueError(f"expected logits [{len(contexts)}, vocab], got {list(logits.shape)}")
        raw = logits.float()
        B, V = raw.shape
        sps = [c.sampling_params for c in contexts]
        # logit_bias and grammar masks shape the distribution itself: logprobs are reported from `shaped`
        bias_rows = [i for i, sp in enumerate(sps) if sp.logit_bias]
        shaped = raw.clone() if bias_rows else raw
        for i in bias_rows:
            items = [(t, b) for t, b in sps[i].logit_bias.items() if t < V]  # type: ignore[union-attr]
            if items:
                ids = torch.tensor([t for t, _ in items], dtype=torch.int64, device=raw.device)
                shaped[i].index_add_(0, ids, torch.tensor([b for _, b in items], device=raw.device))
        dead: list[int] = []
        if masks is not None:
            rows, words, dead = masks.result()
            shaped = _apply_masks(shaped, rows.to(raw.device), words.to(raw.device))
        pen_rows = [
            i for i, sp in enumerate(sps)
            if sp.repetition_penalty != 1.0 or sp.frequency_penalty or sp.presence_penalty
        ]
        banned = [self._banned_tokens(c) for c in contexts]
        x = shaped.clone() if pen_rows or any(banned) else shaped  # `shaped` stays intact for logprobs
        if pen_rows:
            rows = torch.tensor(pen_rows, device=x.device)
            sub = x[rows]
            apply_penalties(sub, [contexts[i] for i in pen_rows])
            x[rows] = sub
        for i, ids in enumerate(banned):
            if ids:
                x[i, torch.tensor([t for t in ids if 0 <= t < V], dtype=torch.int64, device=x.device)] = float("-inf")
                if masks is not None and bool(torch.isinf(x[i]).all()):
                    x[i] = shaped[i]  # the grammar allows only what min_tokens bans (its end): the grammar wins
        if dead:
            self._rescue_dead_rows(x, contexts, dead)

        tokens = torch.empty(B, dtype=torch.int64, device=x.device)
        greedy = [i for i, sp in enumerate(sps) if sp.greedy]
        sampled = [i for i, sp in enumerate(sps) if not sp.greedy]
        if greedy:
            g = torch.tensor(greedy, device=x.device)
            tokens[g] = x[g].argmax(dim=-1)
        if sampled:
            s = torch.tensor(sampled, device=x.device)
            row_drafts = None if drafts is None else [drafts[i] for i in sampled]
            tokens[s] = self._sample(x[s], [contexts[i] for i in sampled], row_drafts)

        token_list = tokens.cpu()
        return SamplerOutput(token_ids=token_list, logprobs=self._logprobs(shaped, token_list, sps))

    @staticmethod
    def _rescue_dead_rows(x: torch.Tensor, contexts: Sequence["TextContext"], rows: list[int]) -> None:
        """A constrained row whose mask allows nothing (a matcher in an error state) may only end: its eos."""
        for i in rows:
            eos = [t for t in contexts[i].eos_token_ids if t < x.shape[1]]
            if eos:
                x[i, torch.tensor(eos, dtype=torch.int64, device=x.device)] = 0.0

    @staticmethod
    def _banned_tokens(ctx: "TextContext") -> list[int]:
        """Stop tokens (and eos unless ignore_eos) are forbidden until min_new_tokens outputs exist."""
        sp = ctx.sampling_params
        if ctx.num_output_tokens >= sp.min_new_tokens:
            return []
        ids = list(sp.stop_token_ids)
        if not sp.ignore_eos:
            ids.extend(ctx.eos_token_ids)
        return ids

    def _sample(self, x: torch.Tensor, contexts: list["TextContext"], drafts: list[int] | None = None) -> torch.Tensor:
        sps = [c.sampling_params for c in contexts]
        V = x.shape[1]
        x = x / _column([sp.temperature for sp in sps], x)
        if any(sp.min_p > 0 for sp in sps):
            x = apply_min_p(x, _column([sp.min_p for sp in sps], x))
        if any(0 < sp.top_k < V for sp in sps):
            k = torch.tensor([sp.top_k if 0 < sp.top_k < V else V for sp in sps], device=x.device)
            x = apply_top_k(x, k[:, None])
        if any(sp.top_p < 1.0 for sp in sps):
            x = apply_top_p(x, _column([sp.top_p for sp in sps], x))
        probs = torch.softmax(x, dim=-1)
        noise = torch.empty_like(probs)
        unseeded = [i for i, sp in enumerate(sps) if sp.seed is None]
        if unseeded:
            shared = torch.empty(len(unseeded), V, device=x.device).exponential_(
                generator=self._shared_generator(x.device)
            )
            noise[torch.tensor(unseeded, device=x.device)] = shared
        for i, (ctx, sp) in enumerate(zip(contexts, sps)):
            if sp.seed is not None:
                noise[i].exponential_(generator=_request_generator(ctx, x.device))
        if drafts is None or all(d < 0 for d in drafts):
            return (probs / noise).argmax(dim=-1)
        return self._verify(probs, noise, contexts, drafts)

    def _verify(self, probs: torch.Tensor, noise: torch.Tensor, contexts: list["TextContext"],
                drafts: list[int]) -> torch.Tensor:
        """Rows with a draft d: d with probability p(d) (u ~ U[0, 1) < p(d)), else a draw from p with d removed
        (the same exponential race on the remaining mass); rows without a draft: a plain draw."""
        d = torch.tensor(drafts, dtype=torch.int64, device=probs.device)
        has = d >= 0
        safe = d.clamp(min=0)[:, None]
        u = torch.empty(len(drafts), device=probs.device)
        unseeded = [i for i, c in enumerate(contexts) if c.sampling_params.seed is None]
        if unseeded:
            u[torch.tensor(unseeded, device=probs.device)] = torch.rand(
                len(unseeded), device=probs.device, generator=self._shared_generator(probs.device))
        for i, ctx in enumerate(contexts):
            if ctx.sampling_params.seed is not None:
                u[i] = torch.rand(1, device=probs.device, generator=_request_generator(ctx, probs.device))[0]
        accept = has & (u < probs.gather(1, safe)[:, 0])
        residual = torch.where(has[:, None], probs.scatter(1, safe, 0.0), probs)
        return torch.where(accept, d, (residual / noise).argmax(dim=-1))

    @staticmethod
    def _logprobs(
        raw: torch.Tensor, tokens: torch.Tensor, sps: list
    ) -> list[tuple[float, dict[int, float]] | None]:
        rows = [i for i, sp in enumerate(sps) if sp.logprobs is not None]
        out: list[tuple[float, dict[int, float]] | None] = [None] * len(sps)
        if not rows:
            return out
        lp = torch.log_softmax(raw[torch.tensor(rows, device=raw.device)], dim=-1)
        # a forced token the scores rule out (-inf) reports vLLM's floor: JSON has no infinities
        chosen = lp.gather(1, tokens[rows].to(raw.device)[:, None])[:, 0].nan_to_num(LOGPROB_FLOOR, neginf=LOGPROB_FLOOR).tolist()
        n_top = min(max(sps[i].logprobs for i in rows), raw.shape[1])
        top_vals, top_ids = (lp.topk(n_top, dim=-1) if n_top else (lp[:, :0], lp[:, :0].long()))
        top_vals, top_ids = top_vals.tolist(), top_ids.tolist()
        for j, i in enumerate(rows):
            n = sps[i].logprobs
            # tokens a grammar or a -100 bias ruled out (-inf) are no alternatives
            out[i] = (chosen[j], {t: v for t, v in zip(top_ids[j][:n], top_vals[j][:n]) if v != float("-inf")})
        return out


LOGPROB_FLOOR = -9999.0


def _apply_masks(logits: torch.Tensor, rows: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """A copy of logits [B, V] with the tokens that rows `rows` disallow at -inf (words: their bitmasks)."""
    from maxcli import ops

    out = logits.clone()
    if rows.shape[0] == logits.shape[0]:  # every row constrained (rows are increasing): no gather
        ops.apply_token_bitmask_(out, words)
        return out
    sub = out.index_select(0, rows)
    ops.apply_token_bitmask_(sub, words)
    out.index_copy_(0, rows, sub)
    return out


def prompt_logprobs(logits: torch.Tensor, prompt_tokens: Sequence[int], num_top: int = 0) -> LogProbabilities:
    """Logprobs of prompt tokens 1..P-1 (the first has no context), for echo.

    logits [P or P-1, V]: row i holds the model's scores at prompt position i, i.e. for token i + 1.
    """
    targets = list(prompt_tokens[1:])
    if logits.dim() != 2 or logits.shape[0] < len(targets):
        raise ValueError(f"need logits for {len(targets)} prompt positions, got shape {list(logits.shape)}")
    if not targets:
        return LogProbabilities()
    lp = torch.log_softmax(logits[: len(targets)].float(), dim=-1)
    ids = torch.tensor(targets, dtype=torch.int64, device=lp.device)
    chosen = lp.gather(1, ids[:, None])[:, 0].tolist()
    if num_top:
        vals, top = lp.topk(min(num_top, lp.shape[1]), dim=-1)
        tops = [dict(zip(i, v)) for i, v in zip(top.tolist(), vals.tolist())]
    else:
        tops = [{} for _ in targets]
    return LogProbabilities(token_log_probabilities=chosen, top_log_probabilities=tops)
