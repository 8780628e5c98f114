"""Standalone drafting: a small model that shares the target's vocabulary proposes k tokens greedily.

Each drafted request has a mirror context in the draft model's own paged KV cache. A drafting round, for
all requests of the step at once: bring each mirror up to the request's tokens (its KV stays valid for the
common prefix of what it fed and what the target accepted; the rest is fed again, the whole prompt the
first time), then k - 1 more one-token steps, each batch's argmax appended as the next draft. Mirrors are
released when their request ends. Cost per round: one catch-up forward and k - 1 decode steps of the draft
model over the drafting requests.
"""

from __future__ import annotations

from typing import Any

from maxcli.interfaces import InputError, RequestID, SamplingParams
from maxcli.pipelines.core.context import TextContext


def draft_config(config: Any, target_pipeline: Any) -> Any:
    """The draft model's PipelineConfig: the target's settings for its own file, no drafting of its own, and
    a KV cache with as many pages as the target's (a page of the smaller model is smaller)."""
    from maxcli.config import SpeculativeConfig

    kv = config.kv_cache.model_copy(update={"kv_cache_num_pages": target_pipeline.kv_manager.total_num_pages})
    return config.model_copy(update={
        "model_path": config.speculative.draft_model, "served_model_name": None, "weight_path": [],
        "max_length": target_pipeline.max_seq_len, "speculative": SpeculativeConfig(), "kv_cache": kv,
        "quantization_encoding": None, "architecture": None,  # the draft's own file names its architecture
    })


def check_same_vocabulary(target_tokenizer: Any, draft_tokenizer: Any, draft_name: str) -> None:
    """InputError unless both tokenizers map every id to the same token."""
    size, draft_size = target_tokenizer.vocab_size, draft_tokenizer.vocab_size
    if size != draft_size:
        raise InputError(f"draft model {draft_name} has a vocabulary of {draft_size} tokens, the target {size}; "
                         "a draft model must share the target's tokenizer")
    ids = list(range(size))
    if target_tokenizer.token_strings(ids) != draft_tokenizer.token_strings(ids):
        raise InputError(f"draft model {draft_name} maps token ids to other tokens than the target; a draft model "
                         "must share the target's tokenizer")


class DraftModelProposer:
    def __init__(self, pipeline: Any, num_tokens: int) -> None:
        self.pipeline, self.num_tokens = pipeline, num_tokens
        self.kv = pipeline.kv_manager
        self._mirrors: dict[RequestID, TextContext] = {}
        self._greedy = SamplingParams(temperature=0.0)

    def _mirror(self, ctx: TextContext) -> TextContext:
        mirror = self._mirrors.get(ctx.request_id)
        if mirror is None:
            mirror = TextContext(request_id=ctx.request_id, tokens=list(ctx.tokens), max_length=ctx.max_length,
                                         sampling_params=self._greedy)
            self.kv.claim(ctx.request_id)
            self._mirrors[ctx.request_id] = mirror
            return mirror
        limit = min(len(mirror.tokens), len(ctx.tokens))
        start = max(0, min(mirror.num_computed_tokens, limit) - 1)
        common = next((i for i in range(start, limit) if mirror.tokens[i] != ctx.tokens[i]), limit)
        mirror.tokens = list(ctx.tokens)
        mirror.num_computed_tokens = min(mirror.num_computed_tokens, common, len(ctx.tokens) - 1)
        return mirror

    def forget(self, request_id: RequestID) -> None:
        if self._mirrors.pop(request_id, None) is not None:
            self.kv.release(request_id)

    def propose_many(self, requests: list[tuple[TextContext, int]]) -> dict[RequestID, list[int]]:
        """Drafts (up to min(limit, num_tokens) each) for (context, limit) pairs, in one round of steps."""
        live: list[tuple[Any, int]] = []
        for ctx, limit in requests:
            k = min(self.num_tokens, limit)
            if k <= 0:
                continue
            mirror = self._mirror(ctx)
            if not self.kv.can_alloc(mirror, num_steps=k, num_tokens=len(mirror.tokens) + k - 1):
                continue  # no room in the draft cache: this request runs undrafted this step
            self.kv.alloc(mirror, num_steps=k, num_tokens=len(mirror.tokens) + k - 1)
            live.append((mirror, k))
        drafts: dict[RequestID, list[int]] = {m.request_id: [] for m, _ in live}
        while live:
            result = self.pipeline.forward_and_sample([(m, m.active_length) for m, _ in live])
            still = []
            for mirror, k in live:
                mirror.num_computed_tokens = len(mirror.tokens)
                self.kv.commit(mirror)
                token = result.sampled[mirror.request_id]
                mirror.tokens.append(int(token))
                drafts[mirror.request_id].append(int(token))
                if len(drafts[mirror.request_id]) < k:
                    still.append((mirror, k))
            live = still
        return drafts  # each mirror keeps its drafted tokens: the next round compares them with the accepted ones
