"""Speculative decoding: draft tokens for decoding requests, then keep the longest prefix the model agrees with.

Drafts come from n-gram lookup in the request's own tokens (NgramProposer) or from a small draft model
(maxcli.engine.draft_model).

A step feeds a drafted request its last token plus k drafted ones and scores all k + 1 positions in the same
forward as the rest of the batch. Row i verifies draft i (maxcli.engine.sampler: greedy rows take the argmax;
sampled rows accept draft d with probability p(d) and otherwise draw from p with d removed, which is exact
rejection sampling for a draft that is a point mass). The emitted tokens are the accepted drafts plus the
token of the first row that disagreed (or a bonus token from the last row): 1..k+1 tokens per step, with the
target model's output distribution. KV slots written for rejected drafts lie beyond num_computed_tokens and
are overwritten by the next step; pages stay owned by the request until it ends.

Drafting applies to requests whose next-token distribution does not depend on the tokens drafted before it in
the same step: no repetition/frequency/presence penalty, no grammar, and past min_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from maxcli.engine.structured import CONSTRAINT_KEY

if TYPE_CHECKING:
    from maxcli.pipelines.core.context import TextContext


def speculation_allowed(ctx: "TextContext") -> bool:
    sp = ctx.sampling_params
    return (sp.repetition_penalty == 1.0 and not sp.frequency_penalty and not sp.presence_penalty
            and CONSTRAINT_KEY not in ctx.extra and ctx.num_output_tokens >= sp.min_new_tokens)


class NgramProposer:
    """Prompt lookup: find the latest earlier occurrence of the sequence's last n tokens (n from max_n down to
    min_n) and propose the tokens that followed it. Cost per call: O(len(tokens) * n) in numpy."""

    def __init__(self, min_n: int, max_n: int, num_tokens: int) -> None:
        self.min_n, self.max_n, self.num_tokens = min_n, max_n, num_tokens

    def propose(self, tokens: list[int], limit: int) -> list[int]:
        k = min(self.num_tokens, limit)
        if k <= 0 or len(tokens) < self.min_n + 1:
            return []
        seq = np.asarray(tokens, dtype=np.int64)
        for n in range(min(self.max_n, len(seq) - 1), self.min_n - 1, -1):
            suffix = seq[-n:]
            # windows starting before len - n: each has at least one token after it
            windows = np.lib.stride_tricks.sliding_window_view(seq[:-1], n)
            hits = np.flatnonzero((windows == suffix).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return seq[start:start + k].tolist()
        return []


@dataclass
class SpeculativeStats:
    """Drafted and accepted tokens since start; accepted_per_position[i]: steps whose draft i was accepted."""

    num_drafts: int = 0  # request-steps that carried a draft
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    drafted_per_position: list[int] = field(default_factory=list)
    accepted_per_position: list[int] = field(default_factory=list)

    def record(self, drafted: int, accepted: int) -> None:
        self.num_drafts += 1
        self.drafted_tokens += drafted
        self.accepted_tokens += accepted
        while len(self.drafted_per_position) < drafted:
            self.drafted_per_position.append(0)
            self.accepted_per_position.append(0)
        for i in range(drafted):
            self.drafted_per_position[i] += 1
            if i < accepted:
                self.accepted_per_position[i] += 1

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"drafts": self.num_drafts, "drafted_tokens": self.drafted_tokens,
                "accepted_tokens": self.accepted_tokens, "acceptance_rate": round(self.acceptance_rate, 4),
                "acceptance_per_position": [round(a / d, 4) if d else 0.0 for a, d in
                                            zip(self.accepted_per_position, self.drafted_per_position)]}


def accepted_prefix(row_tokens: list[int], draft: list[int]) -> list[int]:
    """The tokens a drafted request emits: row i's token while it equals draft i, then the first row token
    that differs (or the last row's bonus token)."""
    out = []
    for i, tok in enumerate(row_tokens):
        out.append(tok)
        if i >= len(draft) or tok != draft[i]:
            break
    return out


class Speculator:
    """The engine's drafting policy: which decoding requests get drafts this step, and which tokens."""

    def __init__(self, config: Any, draft_pipeline: Any = None) -> None:
        spec = config.speculative
        self.method = spec.speculative_method
        if self.method == "standalone":
            from maxcli.engine.draft_model import DraftModelProposer

            if draft_pipeline is None:
                raise ValueError("standalone drafting needs the draft model's pipeline")
            self.draft_model: Any = DraftModelProposer(draft_pipeline, spec.num_speculative_tokens)
            self.proposer: NgramProposer | None = None
        else:
            self.draft_model = None
            self.proposer = NgramProposer(spec.ngram_prompt_lookup_min, spec.ngram_prompt_lookup_max,
                                          spec.num_speculative_tokens)
        self.stats = SpeculativeStats()

    def draft_many(self, requests: list[tuple["TextContext", int]]) -> dict[Any, list[int]]:
        """Drafts for decoding requests; `limit`: tokens each may still append after this step's first."""
        eligible = [(ctx, limit) for ctx, limit in requests if limit > 0 and speculation_allowed(ctx)]
        if self.draft_model is not None:
            drafts = self.draft_model.propose_many(eligible)
        else:
            assert self.proposer is not None
            drafts = {ctx.request_id: self.proposer.propose(ctx.tokens, limit) for ctx, limit in eligible}
        return {rid: d for rid, d in drafts.items() if d}

    def forget(self, request_id: Any) -> None:
        """The request ended: drop its draft-model state (a no-op for n-gram drafting)."""
        if self.draft_model is not None:
            self.draft_model.forget(request_id)
