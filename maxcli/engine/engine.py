"""LLMEngine: the loop that joins tokenizer, scheduler, pipeline and detokenizer.

step(): the scheduler picks chunks and pages, the pipeline runs one forward and samples, the scheduler
applies tokens and token-id stop conditions, and the detokenizer turns new tokens into text deltas,
applying stop strings (text that could start a stop string is held back until it cannot).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from maxcli.config import ConfigError
from maxcli.engine.scheduler import Scheduler
from maxcli.engine.speculative import Speculator
from maxcli.engine.structured import CONSTRAINT_KEY, GrammarCompiler
from maxcli.interfaces import GenerationStatus, InputError, LogProbabilities, RequestID, TextGenerationRequest
from maxcli.pipelines.core import TextContext


@dataclass
class RequestOutput:
    """What one step produced for one request: new tokens and text, and whether it finished."""

    request_id: RequestID
    new_token_ids: list[int]
    text_delta: str
    finished: bool
    finish_reason: str | None
    new_logprobs: list[tuple[float, dict[int, float]]] = field(default_factory=list)


@dataclass
class _RequestState:
    context: TextContext
    detokenizer: Any
    stop: list[str]
    text: str = ""  # decoded output so far (stop string cut off once found)
    emitted: int = 0  # characters of `text` already returned
    reported_tokens: int = 0  # output tokens already returned


class LLMEngine:
    def __init__(self, tokenizer: Any, pipeline: Any, config: Any, draft_pipeline: Any = None) -> None:
        """`draft_pipeline`: the draft model's pipeline for standalone speculative decoding."""
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.config = config
        spec = getattr(config, "speculative", None)
        drafting = spec is not None and spec.speculative_method is not None
        if drafting and not _drafts_supported(pipeline):
            raise ConfigError("speculative decoding needs the native engine (--engine max)")
        self.speculator = Speculator(config, draft_pipeline) if drafting else None
        self.lora = getattr(getattr(pipeline, "pipeline_model", None), "lora", None)  # maxcli.lora.LoRAManager
        self.scheduler = Scheduler(
            pipeline.kv_manager,
            max_batch_size=config.max_batch_size,
            max_batch_input_tokens=config.max_batch_input_tokens,
            max_seq_len=pipeline.max_seq_len,
            speculator=self.speculator,
            max_adapters=config.lora.max_num_loras if self.lora is not None else None,
        )
        self._states: dict[RequestID, _RequestState] = {}
        self.num_steps = 0
        self.grammars = GrammarCompiler(tokenizer, _logits_width(pipeline, tokenizer))

    # -- requests -----------------------------------------------------------------------------------

    def new_context(self, request: TextGenerationRequest) -> TextContext:
        """Tokenize and validate (InputError on bad input, an uncompilable grammar included); nothing is
        scheduled yet."""
        context = _run(self.tokenizer.new_context(request))
        if context.lora_name is not None:
            if self.lora is None:
                raise InputError(f"LoRA adapter {context.lora_name!r} requested, but LoRA is not enabled (--enable-lora)")
            if context.lora_name not in self.lora.names():
                raise InputError(f"unknown LoRA adapter {context.lora_name!r} (served: {', '.join(self.lora.names()) or 'none'})")
        constraint = self.grammars.constraint(context.sampling_params)
        if constraint is not None:
            context.extra[CONSTRAINT_KEY] = constraint
        return context

    def add_context(self, context: TextContext) -> None:
        from maxcli.pipelines.lib.tokenizer import IncrementalDetokenizer

        sp = context.sampling_params
        self.scheduler.add(context)
        if self.lora is not None:
            self.lora.pin(context.lora_name)  # in flight: never evicted or unloaded under it
        self._states[context.request_id] = _RequestState(
            context=context,
            detokenizer=IncrementalDetokenizer(self.tokenizer, skip_special_tokens=sp.skip_special_tokens),
            stop=list(sp.stop),
        )

    def add_request(self, request: TextGenerationRequest) -> TextContext:
        ctx = self.new_context(request)
        self.add_context(ctx)
        return ctx

    def abort(self, request_id: RequestID) -> None:
        self.scheduler.abort(request_id)
        state = self._states.pop(request_id, None)
        if state is not None and self.lora is not None:
            self.lora.unpin(state.context.lora_name)

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def close(self) -> None:
        """Stop the other tensor-parallel ranks of the model (a no-op without tensor parallelism)."""
        runtime = getattr(getattr(self.pipeline, "pipeline_model", None), "tp_runtime", None)
        if runtime is not None:
            runtime.shutdown()

    # -- one step -----------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        plan = self.scheduler.schedule()
        if plan.is_empty:
            return []
        if plan.drafts:
            result = self.pipeline.forward_and_sample(plan.scheduled, plan.drafts)
            for drafted, accepted in result.drafted.values():
                self.speculator.stats.record(drafted, accepted)  # type: ignore[union-attr]
        else:
            result = self.pipeline.forward_and_sample(plan.scheduled)
        self.scheduler.postprocess(plan, result.sampled, result.more_tokens)
        self.num_steps += 1
        outputs: list[RequestOutput] = []
        more_logprobs = result.more_logprobs
        for ctx, _ in plan.scheduled:
            state = self._states.get(ctx.request_id)
            if state is None:
                continue
            first = result.logprobs.get(ctx.request_id)
            out = self._advance(state, [first, *more_logprobs.get(ctx.request_id, [])] if first is not None else [])
            if out is not None:
                outputs.append(out)
        return outputs

    def _advance(self, state: _RequestState, logprobs: list[tuple[float, dict[int, float]]]) -> RequestOutput | None:
        """`logprobs`: one entry per token this step emitted for the request (empty without logprobs)."""
        ctx = state.context
        new_ids = ctx.output_token_ids[state.reported_tokens :]
        state.reported_tokens = ctx.num_output_tokens
        if not new_ids and not ctx.is_done:
            return None  # a prefill chunk that produced no token yet
        lps = logprobs[: len(new_ids)]  # a final status may have cut the emitted tokens short
        if lps:
            log = ctx.log_probabilities or LogProbabilities()
            ctx.log_probabilities = log
            log.token_log_probabilities.extend(lp for lp, _ in lps)
            log.top_log_probabilities.extend(top for _, top in lps)
        for tok in new_ids:
            if ctx.status is GenerationStatus.END_OF_SEQUENCE and tok == new_ids[-1] and _is_stop_token(ctx, tok):
                break  # the eos / stop token itself is not part of the text
            state.text += state.detokenizer.push(tok)
        if state.stop and not ctx.is_done:
            cut = _find_stop(state.text, state.stop, state.emitted)
            if cut is not None:
                state.text = state.text[:cut]
                self.scheduler.finish(ctx.request_id, GenerationStatus.END_OF_SEQUENCE)
        if ctx.is_done:
            limit = len(state.text)
            self._states.pop(ctx.request_id, None)
            if self.lora is not None:
                self.lora.unpin(ctx.lora_name)
        else:
            hold = max((len(s) - 1 for s in state.stop), default=0)
            limit = max(state.emitted, len(state.text) - hold)
        delta = state.text[state.emitted : limit]
        state.emitted = limit
        return RequestOutput(
            request_id=ctx.request_id,
            new_token_ids=new_ids,
            text_delta=delta,
            finished=ctx.is_done,
            finish_reason=ctx.status.finish_reason,
            new_logprobs=lps,
        )


def _drafts_supported(pipeline: Any) -> bool:
    """Whether the pipeline's step takes drafted tokens (the native pipeline; not the transformers fallback)."""
    import inspect

    return "drafts" in inspect.signature(pipeline.forward_and_sample).parameters


def _logits_width(pipeline: Any, tokenizer: Any) -> int:
    """The model's vocabulary (logits) size; the tokenizer's when the model does not say."""
    hf = getattr(getattr(pipeline, "pipeline_model", None), "huggingface_config", None)
    size = getattr(hf, "vocab_size", None)
    return int(size) if isinstance(size, int) and size > 0 else int(tokenizer.vocab_size)


def _is_stop_token(ctx: TextContext, tok: int) -> bool:
    sp = ctx.sampling_params
    return tok in sp.stop_token_ids or (tok in ctx.eos_token_ids and not sp.ignore_eos)


def _find_stop(text: str, stops: list[str], emitted: int) -> int | None:
    """Index where the earliest stop string starts in text (searching only where a new one can be)."""
    longest = max(len(s) for s in stops)
    begin = max(0, emitted - longest)
    hits = [i for i in (text.find(s, begin) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _run(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # inside a running loop (the server): the tokenizer's coroutines do no awaiting, so drive them directly
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("tokenizer coroutine awaited something; call it with await instead")
