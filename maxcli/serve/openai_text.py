"""POST /v1/chat/completions and /v1/completions: OpenAI semantics over the engine driver.

Each of n choices (for every prompt) is its own engine request; they share a batch and the prompt's
prefix-cached pages. Streaming replies are SSE chunks ending with `data: [DONE]`; a client that goes away
mid-stream cancels the response task, whose `finally` aborts the unfinished choices (freeing their KV
pages before the engine's next step).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from maxcli.engine.engine import RequestOutput
from maxcli.serve.errors import APIError, error_body, error_response
from maxcli.serve.jobs import ClientGone, GenerationJob, new_request, sampling_params_for
from maxcli.serve.logprobs import TokenTexts, chat_logprobs, completion_logprobs, visible_output_count
from maxcli.serve.schemas import ChatCompletionRequest, CompletionRequest
from maxcli.serve.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])

CLIENT_CLOSED = 499  # nginx's status for "client closed the request"; nobody reads it but /metrics


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _usage(job: GenerationJob, n: int) -> dict[str, int]:
    prompt = sum(c.context.prompt_len for c in job.choices if c.index % n == 0)  # each prompt once
    completion = sum(c.context.num_output_tokens for c in job.choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _run_to_end(job: GenerationJob, request: Request) -> Response | None:
    """Wait for every choice; None when done, a 499 response when the client left (job aborted)."""
    try:
        async for _ in job.outputs(request.is_disconnected):
            pass
    except ClientGone:
        return error_response(CLIENT_CLOSED, "client closed the request")
    finally:
        job.abort()  # no-op when every choice finished; frees pages when the handler is cancelled
    return None


def _streaming(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _guarded(job: GenerationJob, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ends every stream with [DONE], reports mid-stream failures as an error event, and aborts the
    job's unfinished choices however the stream ends (client disconnect cancels this generator)."""
    try:
        async for event in events:
            yield event
    except APIError as exc:
        yield _sse(error_body(exc.status, exc.message, exc.param, exc.code))
    finally:
        job.abort()
    yield "data: [DONE]\n\n"


# -- chat -----------------------------------------------------------------------------------------------


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    if not state.ready:
        state.text_driver()  # 503 while loading, whatever the body
    try:
        num_logprobs = body.num_logprobs
    except ValueError as exc:
        raise APIError(400, str(exc), param="top_logprobs") from None
    messages = body.chat_messages()
    driver = state.text_driver(messages)
    requests = [
        new_request(state.model_name, sampling_params_for(body, state.config, body.max_new_tokens, i, num_logprobs),
                    messages=messages)
        for i in range(body.n)
    ]
    job = GenerationJob(driver, state.settings.max_queue_size)
    await job.start(requests)
    texts = TokenTexts(driver.engine.tokenizer)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    if body.stream:
        return _streaming(_guarded(job, _chat_events(job, body, head, texts)))
    gone = await _run_to_end(job, request)
    if gone is not None:
        return gone
    choices = []
    for c in job.choices:
        logprobs = None
        if body.logprobs:
            log = c.context.log_probabilities
            count = visible_output_count(c.context)
            ids = c.context.output_token_ids[:count]
            entries = list(zip(log.token_log_probabilities, log.top_log_probabilities)) if log else []
            logprobs = {"content": chat_logprobs(texts, ids, entries[:count])}
        choices.append({
            "index": c.index,
            "message": {"role": "assistant", "content": c.text},
            "logprobs": logprobs,
            "finish_reason": c.finish_reason,
        })
    return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": _usage(job, body.n)})


async def _chat_events(job: GenerationJob, body: ChatCompletionRequest, head: dict[str, Any],
                       texts: TokenTexts) -> AsyncIterator[str]:
    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        payload = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        if body.include_usage:
            payload["usage"] = None
        return _sse(payload)

    for c in job.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""})
    async for choice, out in job.outputs():
        logprobs = None
        if body.logprobs:
            ids, entries = _visible_new(choice.context, out)
            logprobs = {"content": chat_logprobs(texts, ids, entries)}
        if not out.text_delta and not out.finished and not (logprobs and logprobs["content"]):
            continue
        delta = {"content": out.text_delta} if out.text_delta else {}
        yield chunk(choice.index, delta, logprobs, out.finish_reason if out.finished else None)
    if body.include_usage:
        yield _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": _usage(job, body.n)})


def _visible_new(context: Any, out: RequestOutput) -> tuple[list[int], list[tuple[float, dict[int, float]]]]:
    """The output's new tokens (and logprobs) that belong to the text: a final stop token is dropped."""
    ids, entries = list(out.new_token_ids), list(out.new_logprobs)
    if out.finished and visible_output_count(context) < context.num_output_tokens and ids:
        ids = ids[:-1]
    return ids, entries[: len(ids)]


# -- completions ----------------------------------------------------------------------------------------


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = get_state(request)
    state.check_model(body.model)
    if not state.ready:
        state.text_driver()  # 503 while loading, whatever the body
    prompts = body.prompts()
    driver = state.text_driver(prompts[0] if prompts else None)
    requests = [
        new_request(state.model_name,
                    sampling_params_for(body, state.config, body.max_tokens, i, body.logprobs, echo=body.echo),
                    prompt=p)
        for p in prompts
        for i in range(body.n)
    ]
    job = GenerationJob(driver, state.settings.max_queue_size)
    await job.start(requests)
    texts = TokenTexts(driver.engine.tokenizer)
    prompt_texts = [p if isinstance(p, str) else texts.decode(p) for p in prompts]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": state.model_name}
    if body.stream:
        return _streaming(_guarded(job, _completion_events(job, body, head, texts, prompt_texts)))
    gone = await _run_to_end(job, request)
    if gone is not None:
        return gone
    choices = []
    for c in job.choices:
        echo = prompt_texts[c.index // body.n] if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(texts, c.context, echo=body.echo, output_count=visible_output_count(c.context))
        choices.append({"index": c.index, "text": echo + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason})
    return JSONResponse({**head, "object": "text_completion", "choices": choices, "usage": _usage(job, body.n)})


async def _completion_events(job: GenerationJob, body: CompletionRequest, head: dict[str, Any], texts: TokenTexts,
                             prompt_texts: list[str]) -> AsyncIterator[str]:
    def chunk(index: int, text: str, logprobs: Any, finish: str | None) -> str:
        payload = {**head, "object": "text_completion",
                   "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if body.include_usage:
            payload["usage"] = None
        return _sse(payload)

    echoed: set[int] = set()
    async for choice, out in job.outputs():
        text, logprobs = out.text_delta, None
        first = body.echo and choice.index not in echoed
        if first:
            echoed.add(choice.index)
            text = prompt_texts[choice.index // body.n] + text
        if body.logprobs is not None:
            ids, entries = _visible_new(choice.context, out)
            logprobs = completion_logprobs(texts, choice.context, echo=first, output_ids=ids, output_entries=entries)
        if not text and not out.finished and not (logprobs and logprobs["tokens"]):
            continue
        yield chunk(choice.index, text, logprobs, out.finish_reason if out.finished else None)
    if body.include_usage:
        yield _sse({**head, "object": "text_completion", "choices": [], "usage": _usage(job, body.n)})
