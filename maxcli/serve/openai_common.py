"""What the chat and completions routes share: SSE framing, usage, waiting for a job, stream guards."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from maxcli.engine.engine import RequestOutput
from maxcli.serve.errors import APIError, error_body, error_response
from maxcli.serve.jobs import ClientGone, GenerationJob
from maxcli.serve.logprobs import visible_output_count
from maxcli.serve.state import ServerState, get_state

CLIENT_CLOSED = 499  # nginx's status for "client closed the request"; nobody reads it but /metrics


def text_state(request: Request, model: str) -> ServerState:
    """The server state for a text-generation route: 404 for another model, 503 while loading (whatever
    the body)."""
    state = get_state(request)
    state.check_model(model)
    if not state.ready:
        state.text_driver()
    return state


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(job: GenerationJob, n: int) -> dict[str, int]:
    prompt = sum(c.context.prompt_len for c in job.choices if c.index % n == 0)  # each prompt once
    completion = sum(c.context.num_output_tokens for c in job.choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def run_to_end(job: GenerationJob, request: Request) -> Response | None:
    """Wait for every choice; None when done, a 499 response when the client left (job aborted)."""
    try:
        async for _ in job.outputs(request.is_disconnected):
            pass
    except ClientGone:
        return error_response(CLIENT_CLOSED, "client closed the request")
    finally:
        job.abort()  # no-op when every choice finished; frees pages when the handler is cancelled
    return None


def streaming(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def guarded(job: GenerationJob, events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Ends every stream with [DONE], reports mid-stream failures as an error event, and aborts the
    job's unfinished choices however the stream ends (client disconnect cancels this generator)."""
    try:
        async for event in events:
            yield event
    except APIError as exc:
        yield sse(error_body(exc.status, exc.message, exc.param, exc.code))
    finally:
        job.abort()
    yield "data: [DONE]\n\n"


def visible_new(context: Any, out: RequestOutput) -> tuple[list[int], list[tuple[float, dict[int, float]]]]:
    """The output's new tokens (and logprobs) that belong to the text: a final stop token is dropped."""
    ids, entries = list(out.new_token_ids), list(out.new_logprobs)
    if out.finished and visible_output_count(context) < context.num_output_tokens and ids:
        ids = ids[:-1]
    return ids, entries[: len(ids)]
