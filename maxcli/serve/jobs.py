"""GenerationJob: the engine requests behind one HTTP request (prompts x n choices), and their outputs.

A job submits every choice at once, waits until the engine thread has accepted (tokenized and queued)
all of them, and then yields (choice index, RequestOutput) as steps produce them. If any choice is
rejected, the accepted ones are aborted and the rejection becomes the HTTP error. `abort()` (client gone,
handler cancelled) frees every unfinished choice's KV pages.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

from maxcli.config import PipelineConfig
from maxcli.engine.engine import RequestOutput
from maxcli.interfaces import InputError, RequestID, SamplingParams, TextGenerationRequest
from maxcli.pipelines.core import TextContext
from maxcli.serve.driver import Accepted, EngineDriver, Rejected, Sink
from maxcli.serve.errors import APIError
from maxcli.serve.schemas import SamplingFields
from maxcli.serve.structured import constraint_fields

DISCONNECT_POLL_S = 1.0  # how often a non-streaming request checks whether its client is still there


def sampling_params_for(
    body: SamplingFields,
    config: PipelineConfig,
    max_new_tokens: int | None,
    choice: int,
    logprobs: int | None = None,
    echo: bool = False,
    grammar: str | None = None,
) -> SamplingParams:
    """The config's sampling defaults, overridden by every field the request set. Choice i of a seeded
    request uses seed + i, so n choices differ from each other yet repeat across identical requests.
    `grammar`: a forced tool-call grammar (maxcli.serve.tools), which excludes any other constraint."""
    seed = body.seed if body.seed is not None else config.sampling.seed
    return config.sampling_params(
        max_new_tokens=max_new_tokens,
        temperature=body.temperature,
        top_k=body.top_k,
        top_p=body.top_p,
        min_p=body.min_p,
        repetition_penalty=body.repetition_penalty,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        seed=None if seed is None else seed + choice,
        stop=None if body.stop is None else list(body.stop),  # type: ignore[arg-type]
        stop_token_ids=None if body.stop_token_ids is None else list(body.stop_token_ids),
        min_new_tokens=body.min_tokens,
        ignore_eos=body.ignore_eos,
        logprobs=logprobs,
        echo=echo or None,
        **constraint_fields(body, grammar),
    )




@dataclass
class Choice:
    """One engine request of the job and what it has produced so far."""

    index: int
    context: TextContext
    text: str = ""
    finish_reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class GenerationJob:
    def __init__(self, driver: EngineDriver, max_queue_size: int) -> None:
        self.driver = driver
        self.max_queue_size = max_queue_size
        self.choices: list[Choice] = []
        self._sink: Sink | None = None
        self._early: list[tuple[int, object]] = []
        self._next_disconnect_check = 0.0  # time.monotonic() of the next client check (non-streaming)  # outputs that arrived before every accept

    async def start(self, requests: list[TextGenerationRequest]) -> list[Choice]:
        """Submit every request; raise APIError (and abort the accepted ones) if any is refused."""
        if not self.driver.alive:
            raise APIError(503, "the engine is not running", code="engine_unavailable")
        if self.driver.queue_length >= self.max_queue_size:
            raise APIError(503, f"the server queue is full ({self.max_queue_size} requests waiting); retry later",
                           code="queue_full")
        sink = self._sink = Sink(asyncio.get_running_loop())
        for i, request in enumerate(requests):
            self.driver.submit(request, sink, i)
        contexts: dict[int, TextContext] = {}
        error: Exception | None = None
        pending = len(requests)
        try:
            while pending:
                tag, message = await sink.queue.get()
                if isinstance(message, Accepted):
                    contexts[tag] = message.context
                elif isinstance(message, Rejected) and tag not in contexts:
                    error = error or message.error
                else:
                    self._early.append((tag, message))
                    continue
                pending -= 1
                self.driver.acknowledged()
        except BaseException:  # cancelled while waiting: un-count what the engine thread never answered
            for _ in range(pending):
                self.driver.acknowledged()
            for ctx in contexts.values():
                self.driver.abort(ctx.request_id)
            raise
        self.choices = [Choice(i, contexts[i]) for i in sorted(contexts)]
        if error is not None:
            self.abort()
            if isinstance(error, InputError):
                raise APIError(400, _one_line(error))
            raise APIError(500, f"internal error: {_one_line(error)}")
        return self.choices

    async def outputs(self, is_disconnected: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[tuple[Choice, RequestOutput]]:
        """(choice, output) until every choice has finished. With is_disconnected, polls it while
        waiting and aborts the job (raising ClientGone) when the client has gone."""
        while not all(c.finished for c in self.choices):
            tag, message = await self._next_message(is_disconnected)
            if isinstance(message, Rejected):  # the engine failed mid-generation
                self.abort()
                raise APIError(500, f"internal error: {_one_line(message.error)}")
            yield self._apply(tag, message)

    async def _next_message(self, is_disconnected: Callable[[], Awaitable[bool]] | None) -> tuple[int, object]:
        assert self._sink is not None, "start() first"
        if self._early:
            return self._early.pop(0)  # arrived while start() waited for accepts; older than the queue's
        queue = self._sink.queue
        if is_disconnected is None:
            return await queue.get()
        while True:  # check the client at least every DISCONNECT_POLL_S, busy or idle
            now = time.monotonic()
            if now >= self._next_disconnect_check:
                self._next_disconnect_check = now + DISCONNECT_POLL_S
                if await is_disconnected():
                    self.abort()
                    raise ClientGone()
            try:
                return await asyncio.wait_for(queue.get(), max(0.0, self._next_disconnect_check - now))
            except asyncio.TimeoutError:
                continue

    def _apply(self, tag: int, out: RequestOutput) -> tuple[Choice, RequestOutput]:
        choice = self.choices[tag]
        choice.text += out.text_delta
        if out.finished:
            choice.finish_reason = out.finish_reason
        return choice, out

    def abort(self) -> None:
        for c in self.choices:
            if not c.finished:
                self.driver.abort(c.context.request_id)
                c.finish_reason = "abort"

    @property
    def unfinished(self) -> bool:
        return any(not c.finished for c in self.choices)


class ClientGone(Exception):
    """The client disconnected before its non-streaming reply was ready."""


def new_request(model_name: str, params: SamplingParams, prompt: str | list[int] | None = None,
                messages: list[dict] | None = None, tools: list[dict] | None = None,
                lora: str | None = None) -> TextGenerationRequest:
    return TextGenerationRequest(request_id=RequestID(), model_name=model_name, prompt=prompt,
                                 messages=messages, sampling_params=params, tools=tools, lora=lora)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
