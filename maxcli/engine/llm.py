"""The offline Python API: `maxcli.LLM(model=...).generate(prompts, sampling_params)`."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from maxcli.config import PipelineConfig
from maxcli.pipelines.lib.entrypoints import load_engine
from maxcli.interfaces import InputError, LogProbabilities, RequestID, SamplingParams, TextGenerationRequest
from maxcli.pipelines.core import TextContext


@dataclass
class GenerationMetrics:
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_prompt_tokens: int = 0
    ttft_s: float = 0.0
    total_s: float = 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        decode_time = self.total_s - self.ttft_s
        return (self.output_tokens - 1) / decode_time if self.output_tokens > 1 and decode_time > 0 else 0.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "ttft_s": round(self.ttft_s, 6),
            "total_s": round(self.total_s, 6),
            "prompt_tokens": self.prompt_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "output_tokens": self.output_tokens,
            "prefill_tok_s": round(self.prefill_tok_s, 2),
            "decode_tok_s": round(self.decode_tok_s, 2),
        }


@dataclass
class CompletionOutput:
    """One prompt's result: text, token ids, finish reason, logprobs and timing."""

    prompt: str | list[int]
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: LogProbabilities | None = None
    prompt_logprobs: LogProbabilities | None = None
    metrics: GenerationMetrics = field(default_factory=GenerationMetrics)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "prompt": self.prompt,
            "text": self.text,
            "token_ids": self.token_ids,
            "finish_reason": self.finish_reason,
            "metrics": self.metrics.to_dict(),
        }
        if self.logprobs is not None:
            d["logprobs"] = [
                {"token_id": t, "logprob": lp, "top_logprobs": {str(k): v for k, v in top.items()}}
                for t, lp, top in zip(
                    self.token_ids, self.logprobs.token_log_probabilities, self.logprobs.top_log_probabilities
                )
            ]
        return d


class LLM:
    """Load a model once, then generate for batches of prompts through the continuous-batching engine.

    `LLM(model="path/or/repo", max_length=2048, ...)` takes PipelineConfig fields as keywords (section
    fields flat or nested), like the CLI flags.
    """

    def __init__(self, model: str | None = None, **config: Any) -> None:
        if model is not None:
            config["model_path"] = model
        self.config = PipelineConfig.from_sources(config)
        self.engine = load_engine(self.config)

    @classmethod
    def from_config(cls, config: PipelineConfig) -> "LLM":
        self = cls.__new__(cls)
        self.config = config
        self.engine = load_engine(config)
        return self

    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    def close(self) -> None:
        """Stop the model's other tensor-parallel ranks, if any (also done at interpreter exit)."""
        self.engine.close()

    def __enter__(self) -> "LLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def default_sampling_params(self, **overrides: Any) -> SamplingParams:
        """Sampling values from the config's sampling section and max_new_tokens, then overrides."""
        return self.config.sampling_params(**overrides)

    def generate(
        self,
        prompts: str | Sequence[str] | Sequence[list[int]],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_chat_template: bool = False,
        on_text: Callable[[int, str], None] | None = None,
        lora: str | Sequence[str | None] | None = None,
    ) -> list[CompletionOutput]:
        """Generate for every prompt (text or token ids) in one batch; results in prompt order.

        use_chat_template wraps each text prompt as a user message in the model's chat template (when the
        model has one). on_text(i, delta) receives text as it is produced. `lora` names the LoRA adapter
        of every prompt, or gives one per prompt (None: the base model).
        """
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]  # type: ignore[list-item]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = self.default_sampling_params()
        params = list(sampling_params) if isinstance(sampling_params, (list, tuple)) else [sampling_params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
        engine = self.engine
        templated = use_chat_template and engine.tokenizer.has_chat_template
        adapters = list(lora) if isinstance(lora, (list, tuple)) else [lora] * len(prompts)
        if len(adapters) != len(prompts):
            raise ValueError(f"{len(adapters)} LoRA names for {len(prompts)} prompts")
        contexts = []
        for p, sp, adapter in zip(prompts, params, adapters):
            request = self._request(sp)
            request.lora = adapter
            if isinstance(p, str) and templated:
                request.messages = [{"role": "user", "content": p}]
            else:
                request.prompt = p
            contexts.append(engine.new_context(request))  # validate every prompt before running any
        return self._run(contexts, prompts, on_text)

    def chat(
        self,
        messages: list[dict[str, Any]],
        sampling_params: SamplingParams | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> CompletionOutput:
        """The assistant's next turn after `messages` ({"role", "content"} dicts) through the chat template.

        on_text(delta) receives text as it is produced. When `cancel` is set (checked between engine steps,
        so never inside one) the request is aborted, its pages freed, and the text so far is returned with
        finish_reason "abort". The output's `prompt` is the last message's content. InputError when the
        model has no chat template (or the conversation is longer than max_length).
        """
        self.require_chat_template()
        request = self._request(sampling_params or self.default_sampling_params())
        request.messages = [dict(m) for m in messages]
        context = self.engine.new_context(request)
        prompt = messages[-1]["content"] if messages else ""
        emit = (lambda _i, delta: on_text(delta)) if on_text is not None else None
        return self._run([context], [prompt], emit, cancel)[0]

    def require_chat_template(self) -> None:
        """InputError unless the model's tokenizer has a chat template (needed to hold a conversation)."""
        if not self.engine.tokenizer.has_chat_template:
            raise InputError(f"{self.config.model_path} has no chat template, so it cannot chat; use generate with a plain prompt")

    def _request(self, sp: SamplingParams) -> TextGenerationRequest:
        return TextGenerationRequest(request_id=RequestID(), model_name=self.config.model_name, sampling_params=sp)

    def _run(
        self,
        contexts: list[TextContext],
        prompts: Sequence[str | list[int]],
        on_text: Callable[[int, str], None] | None,
        cancel: threading.Event | None = None,
    ) -> list[CompletionOutput]:
        """Step the engine until every context finishes or `cancel` is set; results in context order.

        Invariant: on return or on any exception, none of `contexts` holds KV pages (finished requests
        free theirs in the scheduler; the rest are aborted here). The engine runs only this call's
        requests (the offline API is single-caller), so `has_unfinished` means one of ours is.
        """
        engine = self.engine
        results = [CompletionOutput(prompt=p, prompt_token_ids=list(c.prompt_tokens)) for p, c in zip(prompts, contexts)]
        index: dict[RequestID, int] = {}
        start = time.perf_counter()
        for i, ctx in enumerate(contexts):
            engine.add_context(ctx)
            index[ctx.request_id] = i
        try:
            while engine.has_unfinished:
                if cancel is not None and cancel.is_set():
                    self._abort(contexts, results, start)
                    break
                for out in engine.step():
                    i = index[out.request_id]
                    r = results[i]
                    if out.new_token_ids and not r.token_ids:
                        r.metrics.ttft_s = time.perf_counter() - start
                    r.text += out.text_delta
                    if on_text is not None and out.text_delta:
                        on_text(i, out.text_delta)
                    if out.finished:
                        r.finish_reason = out.finish_reason
                        r.metrics.total_s = time.perf_counter() - start
                    r.token_ids = list(contexts[i].output_token_ids)
        except BaseException:
            for ctx in contexts:
                engine.abort(ctx.request_id)
            raise
        for r, ctx in zip(results, contexts):
            r.logprobs = ctx.log_probabilities
            r.prompt_logprobs = ctx.prompt_log_probabilities
            r.metrics.prompt_tokens = ctx.prompt_len
            r.metrics.cached_prompt_tokens = ctx.num_cached_tokens
            r.metrics.output_tokens = ctx.num_output_tokens
        return results

    def _abort(self, contexts: list[TextContext], results: list[CompletionOutput], start: float) -> None:
        """Abort every unfinished context (frees its pages); its result keeps the text already streamed."""
        for ctx, r in zip(contexts, results):
            if r.finish_reason is None:
                self.engine.abort(ctx.request_id)
                r.finish_reason = ctx.status.finish_reason  # "abort"
                r.metrics.total_s = time.perf_counter() - start
