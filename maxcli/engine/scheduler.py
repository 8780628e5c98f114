"""Continuous batching: which requests run in the next forward and with how many tokens.

Policy per step (token budget max_batch_input_tokens, at most max_batch_size sequences):
1. running requests, decodes (1 token) first, then partly prefilled prompts (their next chunk);
   when pages run out, preempt-by-recompute the newest running request (it goes to the front of
   the waiting queue; its hashed pages stay in the prefix cache, so the recompute is often cheap);
2. then, if nothing was preempted this step, admit waiting requests first-come-first-served
   (never skipping the head), each with as much of its prompt as the budget allows (chunked prefill).
With a speculator, a decoding request may also feed drafted tokens (its last token + k drafts, pages for all
of them), within the same token budget, in steps without prefill chunks; drafts are dropped before anything
is preempted for them.
Invariants: every request is in exactly one of `waiting` / `running` until it finishes, and is claimed
in the KV manager for that whole time; running requests are in admission order (newest last);
len(running) <= max_batch_size; a lone request always fits (checked in __init__), so work always progresses.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from maxcli.interfaces import GenerationStatus, InputError, RequestID, TextGenerationInputs
from maxcli.kv_cache.paged_cache import PagedKVCacheManager

if TYPE_CHECKING:
    from maxcli.engine.speculative import Speculator
    from maxcli.pipelines.core.context import TextContext


@dataclass
class SchedulerOutput:
    """One step: (context, num_new_tokens) in batch order; feed tokens [num_computed, num_computed + n)."""

    scheduled: list[tuple["TextContext", int]] = field(default_factory=list)
    preempted: list["TextContext"] = field(default_factory=list)
    # request id -> tokens drafted after its last token; its scheduled count is 1 + len(draft)
    drafts: dict[RequestID, list[int]] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return sum(n for _, n in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled

    def inputs(self) -> TextGenerationInputs["TextContext"]:
        return TextGenerationInputs(batches=[{ctx.request_id: ctx for ctx, _ in self.scheduled}], num_steps=1)


class Scheduler:
    def __init__(
        self,
        kv_manager: PagedKVCacheManager,
        max_batch_size: int,
        max_batch_input_tokens: int,
        max_seq_len: int,
        speculator: "Speculator | None" = None,
        max_adapters: int | None = None,
    ) -> None:
        """`max_adapters`: LoRA adapters one step may serve (resident slots); a waiting request whose
        adapter would exceed it waits until a running adapter's requests finish."""
        self.max_adapters = max_adapters
        for name, value in (
            ("max_batch_size", max_batch_size),
            ("max_batch_input_tokens", max_batch_input_tokens),
            ("max_seq_len", max_seq_len),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        pages_per_seq = math.ceil(max_seq_len / kv_manager.page_size)
        if pages_per_seq > kv_manager.total_num_pages:
            raise ValueError(
                f"one sequence of max_seq_len={max_seq_len} needs {pages_per_seq} KV pages, "
                f"but the cache has {kv_manager.total_num_pages}"
            )
        self.kv = kv_manager
        self.max_batch_size = max_batch_size
        self.max_batch_input_tokens = max_batch_input_tokens
        self.max_seq_len = max_seq_len
        self.speculator = speculator
        self.waiting: deque[TextContext] = deque()
        self.running: list[TextContext] = []
        self._contexts: dict[RequestID, TextContext] = {}
        self.num_preemptions = 0

    # -- queue state ----------------------------------------------------------------------------
    @property
    def has_unfinished(self) -> bool:
        return bool(self._contexts)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def get(self, request_id: RequestID) -> "TextContext | None":
        return self._contexts.get(request_id)

    def _limit(self, ctx: "TextContext") -> int:
        """Most tokens (prompt + output) the request may ever hold."""
        return min(ctx.max_length, self.max_seq_len)

    def _drafts(self, decodes: list["TextContext"]) -> dict[RequestID, list[int]]:
        """Drafted tokens for decoding requests, never past a request's output limit (a step emits up to
        len(draft) + 1 tokens) nor past the step's token budget."""
        if self.speculator is None or not decodes:
            return {}
        spare = self.max_batch_input_tokens - len(decodes)
        limits = [min(min(c.max_new_tokens, self._limit(c) - c.prompt_len) - c.num_output_tokens - 1, spare)
                  for c in decodes]
        return self.speculator.draft_many(list(zip(decodes, limits)))

    # -- adding and removing --------------------------------------------------------------------
    def add(self, context: "TextContext") -> None:
        rid = context.request_id
        if rid in self._contexts:
            raise InputError(f"request {rid} is already scheduled")
        if not context.tokens:
            raise InputError(f"request {rid} has an empty prompt")
        if len(context.tokens) > self._limit(context):
            raise InputError(
                f"request {rid}: prompt of {len(context.tokens)} tokens exceeds the context limit of "
                f"{self._limit(context)}"
            )
        if context.is_done:
            raise InputError(f"request {rid} is already finished ({context.status.value})")
        self.kv.claim(rid)
        self._contexts[rid] = context
        self.waiting.append(context)

    def finish(self, request_id: RequestID, status: GenerationStatus) -> None:
        """End a request now (stop string seen, client gone); frees its pages. Unknown ids are ignored."""
        if not status.is_done:
            raise ValueError(f"finish() needs a final status, got {status.value}")
        ctx = self._contexts.get(request_id)
        if ctx is not None:
            self._finish(ctx, status)

    def abort(self, request_id: RequestID) -> None:
        self.finish(request_id, GenerationStatus.CANCELLED)

    def _finish(self, ctx: "TextContext", status: GenerationStatus) -> None:
        ctx.status = status
        if ctx in self.running:
            self.running.remove(ctx)
        else:
            self.waiting.remove(ctx)
        del self._contexts[ctx.request_id]
        self.kv.release(ctx.request_id)
        if self.speculator is not None:
            self.speculator.forget(ctx.request_id)

    def _preempt(self, ctx: "TextContext") -> None:
        self.running.remove(ctx)
        self.kv.release(ctx.request_id)
        ctx.reset_for_recompute()
        self.kv.claim(ctx.request_id)
        self.waiting.appendleft(ctx)
        self.num_preemptions += 1

    # -- one step -------------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        budget = self.max_batch_input_tokens
        chosen: dict[RequestID, tuple[TextContext, int]] = {}  # insertion order = batch order
        preempted: list[TextContext] = []
        drafts: dict[RequestID, list[int]] = {}

        decodes = [c for c in self.running if c.active_length == 1]
        prefills = [c for c in self.running if c.active_length > 1]
        proposed = self._drafts(decodes)
        for ctx in decodes + prefills:
            if budget == 0:
                break
            if ctx in preempted:
                continue
            n = min(ctx.active_length, budget)
            draft = proposed.get(ctx.request_id, [])[: budget - 1] if ctx.active_length == 1 else []
            if draft and not self.kv.can_alloc(ctx, num_steps=1 + len(draft), num_tokens=ctx.num_computed_tokens + 1 + len(draft)):
                draft = []
            n += len(draft)
            target = ctx.num_computed_tokens + n
            while not self.kv.can_alloc(ctx, num_steps=n, num_tokens=target):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                drafts.pop(victim.request_id, None)
                if victim.request_id in chosen:
                    budget += chosen.pop(victim.request_id)[1]
                if victim is ctx:
                    break
            else:
                self.kv.alloc(ctx, num_steps=n, num_tokens=target)
                chosen[ctx.request_id] = (ctx, n)
                if draft:
                    drafts[ctx.request_id] = draft
                budget -= n

        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_batch_size:
            ctx = self.waiting[0]
            if self.max_adapters is not None and ctx.lora_name is not None:
                live = {c.lora_name for c in self.running if c.lora_name is not None}
                if ctx.lora_name not in live and len(live) >= self.max_adapters:
                    break  # FCFS: its adapter needs a slot that a running request holds
            start = self.kv.prefix_match_length(ctx)
            n = min(len(ctx.tokens) - start, budget)
            if not self.kv.can_alloc(ctx, num_tokens=start + n):
                break  # FCFS: later arrivals never overtake the head
            self.kv.alloc(ctx, num_tokens=start + n)  # shares the matched pages, sets num_computed_tokens
            self.waiting.popleft()
            self.running.append(ctx)
            chosen[ctx.request_id] = (ctx, n)
            budget -= n

        if drafts and any(ctx.active_length > 1 for ctx, _ in chosen.values()):
            # A step with prefill chunks runs the varlen path, whose arithmetic for a drafted row is not a
            # one-token decode's: drafts wait for a decode-only step (their extra pages stay allocated).
            for rid in drafts:
                chosen[rid] = (chosen[rid][0], 1)
            drafts = {}
        return SchedulerOutput(scheduled=list(chosen.values()), preempted=preempted, drafts=drafts)

    def postprocess(
        self, output: SchedulerOutput, sampled: dict[RequestID, int | None],
        more_tokens: dict[RequestID, list[int]] | None = None,
    ) -> list["TextContext"]:
        """Account for a finished forward and return the requests that finished in it.

        `sampled` maps request ids to the token drawn for each sequence whose chunk reached the end of
        its tokens (others may be absent or None); `more_tokens` holds the further tokens a drafted request
        emits (its accepted drafts after the first, and the final one). Requests aborted since schedule()
        are skipped.
        """
        finished: list[TextContext] = []
        for ctx, n in output.scheduled:
            if self._contexts.get(ctx.request_id) is not ctx:
                continue  # finished or aborted since schedule(); a live scheduled request is running
            if ctx.request_id in output.drafts:
                if self._emit(ctx, [int(sampled[ctx.request_id])] + list((more_tokens or {}).get(ctx.request_id, []))):
                    finished.append(ctx)
                continue
            ctx.num_computed_tokens += n
            self.kv.commit(ctx)
            if ctx.num_computed_tokens < len(ctx.tokens):
                continue  # partway through a chunked prompt: no token yet
            token = sampled.get(ctx.request_id)
            if token is None:
                raise ValueError(f"request {ctx.request_id} reached the end of its tokens but no token was sampled")
            status = append_token_and_check(ctx, int(token), self.max_seq_len)
            if status.is_done:
                self._finish(ctx, status)
                finished.append(ctx)
        return finished


    def _emit(self, ctx: "TextContext", tokens: list[int]) -> bool:
        """Append a drafted request's emitted tokens (stopping at a final status); True when it finished.

        The KV cache now holds its fed last token and the accepted drafts, i.e. every appended token but
        the newest one (the first `len(tokens) - 1` emitted tokens are the accepted drafts)."""
        before = len(ctx.tokens)
        status = GenerationStatus.ACTIVE
        for token in tokens:
            status = append_token_and_check(ctx, token, self.max_seq_len)
            if status.is_done:
                break
        ctx.num_computed_tokens += max(1, len(ctx.tokens) - before)
        self.kv.commit(ctx)
        if status.is_done:
            self._finish(ctx, status)
            return True
        return False


def append_token_and_check(ctx: "TextContext", token: int, max_seq_len: int) -> GenerationStatus:
    """Append the sampled token unless no room is left; return the status it leads to (token-id stops:
    eos unless ignore_eos, stop_token_ids, both only after min_new_tokens; max_new_tokens; context limit)."""
    room = min(ctx.max_new_tokens, min(ctx.max_length, max_seq_len) - ctx.prompt_len)
    if ctx.num_output_tokens >= room:
        return GenerationStatus.MAXIMUM_LENGTH
    ctx.append_token(token)
    sp = ctx.sampling_params
    if ctx.num_output_tokens >= sp.min_new_tokens:
        if (token in ctx.eos_token_ids and not sp.ignore_eos) or token in sp.stop_token_ids:
            return GenerationStatus.END_OF_SEQUENCE
    if ctx.num_output_tokens >= room:
        return GenerationStatus.MAXIMUM_LENGTH
    return GenerationStatus.ACTIVE
