"""TextGenerationPipeline: stateless orchestration of forward + sampling over contexts and the KV cache.

Two entry points share one step:
- `execute(TextGenerationInputs)`, the seeds' API: feeds every context's pending tokens, samples, and
  updates the contexts itself (the caller manages pages with kv_manager.claim/alloc/release).
- `forward_and_sample(scheduled)`, used by the engine: the scheduler decides chunks and applies results.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from maxcli.engine import structured
from maxcli.engine.sampler import Sampler, prompt_logprobs
from maxcli.engine.scheduler import append_token_and_check
from maxcli.engine.speculative import accepted_prefix
from maxcli.interfaces import (
    GenerationStatus,
    InputError,
    LogProbabilities,
    Pipeline,
    RequestID,
    TextGenerationInputs,
    TextGenerationOutput,
)
from maxcli.pipelines.core import TextContext
from maxcli.pipelines.lib.pipeline_model import PipelineModel


@dataclass
class StepResult:
    """Tokens drawn for the sequences whose chunk reached the end of their tokens, with logprobs."""

    sampled: dict[RequestID, int] = field(default_factory=dict)
    logprobs: dict[RequestID, tuple[float, dict[int, float]]] = field(default_factory=dict)
    # drafted requests: the tokens they emit after `sampled` (accepted drafts, then the final token)
    more_tokens: dict[RequestID, list[int]] = field(default_factory=dict)
    more_logprobs: dict[RequestID, list[tuple[float, dict[int, float]]]] = field(default_factory=dict)
    drafted: dict[RequestID, tuple[int, int]] = field(default_factory=dict)  # (drafted, accepted) tokens


class TextGenerationPipeline(Pipeline):
    def __init__(
        self,
        pipeline_config: Any,
        pipeline_model: PipelineModel,
        kv_manager: Any,
        max_seq_len: int,
        sampler: Sampler | None = None,
        supports_empty_batches: bool = False,
    ) -> None:
        """`supports_empty_batches` (the architecture's SupportedArchitecture field): execute() of a batch
        with no live request still runs the model's forward over no tokens, for models whose steps must
        stay in lockstep (expert parallelism); otherwise such a batch returns at once."""
        self.supports_empty_batches = supports_empty_batches
        self.pipeline_config = pipeline_config
        self.pipeline_model = pipeline_model
        self.kv_manager = kv_manager
        self.max_seq_len = max_seq_len
        self.sampler = sampler or Sampler()

    @property
    def kv_managers(self) -> list[Any]:
        return [self.kv_manager]

    # -- the engine's step --------------------------------------------------------------------------

    def forward_and_sample(self, scheduled: Sequence[tuple[TextContext, int]],
                           drafts: dict[RequestID, list[int]] | None = None) -> StepResult:
        """One forward over the scheduled chunks (pages already allocated) and sampling; contexts untouched.

        `drafts`: decoding requests fed their last token plus these drafted tokens (maxcli.engine.speculative);
        each gets a logits row per fed token and emits its accepted drafts plus one token."""
        return self._initial_step(scheduled, drafts or {})[0]

    def _initial_step(self, scheduled: Sequence[tuple[TextContext, int]], drafts: dict[RequestID, list[int]]
                      ) -> tuple[StepResult, Any, list[TextContext]]:
        """(result, the model inputs, the sampled contexts) of one forward through
        prepare_initial_token_inputs over the KV manager's fetched inputs."""
        for ctx, n in scheduled:
            ctx.scheduled_tokens = n
        contexts = [c for c, _ in scheduled]
        want_prompt_lp = [c for c in contexts if _wants_prompt_logprobs(c)]
        try:
            kv_inputs = self.kv_manager.fetch(contexts, drafts=drafts)
            inputs = self.pipeline_model.prepare_initial_token_inputs(
                contexts, kv_inputs, -1 if want_prompt_lp else 1)
        finally:
            for c in contexts:
                c.scheduled_tokens = None
        self._set_lora_rows(inputs, contexts, kv_inputs.fed_per_context or [])
        sample_ctxs = list(kv_inputs.sample_contexts)
        result = self._execute_and_sample(inputs, sample_ctxs, drafts, scheduled if want_prompt_lp else None)
        return result, inputs, sample_ctxs

    def _set_lora_rows(self, inputs: Any, contexts: Sequence[TextContext], fed: Sequence[int]) -> None:
        """With LoRA adapters in the step: the slot of each packed token (its request's adapter, -1 for
        the base model), the step's adapters made resident first."""
        lora = getattr(self.pipeline_model, "lora", None)
        if lora is None or all(c.lora_name is None for c in contexts):
            return
        slots = torch.tensor(lora.activate([c.lora_name for c in contexts]), dtype=torch.int64)
        inputs.lora_rows = torch.repeat_interleave(slots, torch.tensor(list(fed), dtype=torch.int64)).to(inputs.input_ids.device)

    def _execute_and_sample(self, inputs: Any, sample_ctxs: list[TextContext], drafts: dict[RequestID, list[int]],
                            prompt_lp_chunks: Sequence[tuple[TextContext, int]] | None) -> StepResult:
        # one sampler row per logits row: a drafted request's rows verify its drafts in order
        row_ctxs = [c for c in sample_ctxs for _ in range(1 + len(drafts.get(c.request_id, ())))]
        row_drafts = [t for c in sample_ctxs for t in [*drafts.get(c.request_id, ()), -1]] if drafts else None
        masks = structured.start_masks(row_ctxs)  # overlaps the forward pass
        outputs = self.pipeline_model.execute(inputs)
        if prompt_lp_chunks:
            if outputs.all_logits is None:
                raise InputError(f"{type(self.pipeline_model).__name__} returns no prompt logits (echo with logprobs)")
            self._collect_prompt_logprobs(prompt_lp_chunks, inputs, outputs.all_logits)
        result = StepResult()
        if not sample_ctxs:
            return result
        if outputs.logits.shape[0] != len(row_ctxs):
            raise RuntimeError(f"{type(self.pipeline_model).__name__}.execute returned {outputs.logits.shape[0]} "
                               f"logits rows for {len(row_ctxs)} sampled rows")
        out = self.sampler(outputs.logits, row_ctxs, masks, row_drafts)
        token_ids = out.token_ids.tolist()
        if masks is not None:
            structured.advance(row_ctxs, token_ids)
        row = 0
        for ctx in sample_ctxs:
            draft = drafts.get(ctx.request_id, [])
            rows = range(row, row + 1 + len(draft))
            row = rows.stop
            emitted = accepted_prefix([token_ids[r] for r in rows], draft)
            result.sampled[ctx.request_id] = emitted[0]
            lps = [out.logprobs[r] for r in rows[: len(emitted)]]
            if lps[0] is not None:
                result.logprobs[ctx.request_id] = lps[0]
            if draft:
                result.more_tokens[ctx.request_id] = emitted[1:]
                result.drafted[ctx.request_id] = (len(draft), len(emitted) - 1)
                if lps[0] is not None:
                    result.more_logprobs[ctx.request_id] = lps[1:]  # type: ignore[assignment]
        return result

    def _collect_prompt_logprobs(
        self, scheduled: Sequence[tuple[TextContext, int]], inputs: Any, all_logits: torch.Tensor
    ) -> None:
        """Echo support: logprobs of the prompt tokens this chunk covers, appended chunk by chunk."""
        cu = inputs.attention.cu_seqlens_q.tolist()
        for b, (ctx, n) in enumerate(scheduled):
            if not _wants_prompt_logprobs(ctx):
                continue
            start = ctx.num_computed_tokens
            stop = min(start + n, ctx.prompt_len)
            if stop <= start:
                continue
            acc = ctx.prompt_log_probabilities
            if acc is None:
                acc = ctx.prompt_log_probabilities = LogProbabilities()
            # row i (position start+i) scores token start+i+1; the chunk covers prompt tokens start+1..stop
            targets = ctx.tokens[start : min(stop + 1, ctx.prompt_len)]
            rows = all_logits[cu[b] : cu[b] + len(targets) - 1]
            lp = prompt_logprobs(rows, targets, ctx.sampling_params.logprobs or 0)
            acc.token_log_probabilities.extend(lp.token_log_probabilities)
            acc.top_log_probabilities.extend(lp.top_log_probabilities)

    # -- the seeds' API -----------------------------------------------------------------------------

    def execute(self, inputs: TextGenerationInputs[TextContext]) -> dict[RequestID, TextGenerationOutput]:
        """Run inputs.num_steps steps for the batch; each context's pages must be allocated for them
        (kv_manager.alloc(context, num_steps)). The first step feeds every context's pending tokens through
        prepare_initial_token_inputs; a following step in which the same contexts decode one token each
        goes through prepare_next_token_inputs."""
        batch = [c for c in inputs.batch.values() if not c.is_done]
        if not batch:
            if self.supports_empty_batches:
                self.pipeline_model.execute(self.pipeline_model.prepare_initial_token_inputs([], self.kv_manager.fetch([])))
            return {}
        new_tokens: dict[RequestID, list[int]] = {c.request_id: [] for c in batch}
        new_lps: dict[RequestID, LogProbabilities] = {}
        prev: tuple[Any, list[TextContext]] | None = None  # the last step's model inputs and sampled contexts
        for _ in range(max(1, inputs.num_steps)):
            live = [c for c in batch if not c.is_done]
            if not live:
                break
            if prev is not None and prev[0] is not None and prev[1] == live and all(c.active_length == 1 for c in live):
                next_tokens = torch.tensor([c.tokens[-1] for c in live], dtype=torch.int64)
                model_inputs = self.pipeline_model.prepare_next_token_inputs(next_tokens, prev[0])
                self._set_lora_rows(model_inputs, live, [1] * len(live))
                step = self._execute_and_sample(model_inputs, live, {}, None)
                prev = (model_inputs, live)
            else:
                step, model_inputs, sampled = self._initial_step([(c, c.active_length) for c in live], {})
                prev = (model_inputs, sampled)
            for ctx in live:
                ctx.num_computed_tokens = len(ctx.tokens)
            self.kv_manager.step(live)
            for ctx in live:
                tok = step.sampled.get(ctx.request_id)
                if tok is None:
                    continue
                before = ctx.num_output_tokens
                ctx.status = append_token_and_check(ctx, tok, self.max_seq_len)
                if ctx.num_output_tokens > before:
                    new_tokens[ctx.request_id].append(tok)
                    if ctx.request_id in step.logprobs:
                        lp, top = step.logprobs[ctx.request_id]
                        acc = new_lps.setdefault(ctx.request_id, LogProbabilities())
                        acc.token_log_probabilities.append(lp)
                        acc.top_log_probabilities.append(top)
        return {
            c.request_id: TextGenerationOutput(
                request_id=c.request_id,
                tokens=new_tokens[c.request_id],
                final_status=c.status,
                log_probabilities=new_lps.get(c.request_id),
            )
            for c in batch
        }

    def release(self, request_id: RequestID) -> None:
        if self.kv_manager.contains(request_id):
            self.kv_manager.release(request_id)


def _wants_prompt_logprobs(ctx: TextContext) -> bool:
    sp = ctx.sampling_params
    return sp.echo and sp.logprobs is not None and ctx.num_computed_tokens < ctx.prompt_len
