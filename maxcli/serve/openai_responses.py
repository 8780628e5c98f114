"""POST /v1/responses (OpenAI's Responses API), and GET/DELETE /v1/responses/{id} for stored responses.

A Responses request is translated into the equivalent chat request (maxcli.serve.responses_schema) and runs
as one engine request through the same tool planning, constraints and sampling as /v1/chat/completions.
Streamed replies are typed SSE events (`event: <type>` + `data: {...}` with a sequence_number), from
`response.created` to `response.completed` (or `response.incomplete` when the token limit cut the reply).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from maxcli.serve.errors import APIError
from maxcli.serve.jobs import Choice, GenerationJob, new_request, sampling_params_for
from maxcli.serve.openai_common import run_to_end, streaming, text_state
from maxcli.serve.response_store import StoredResponse
from maxcli.serve.responses_output import OutputBuilder, conversation_messages
from maxcli.serve.responses_schema import ResponsesRequest, chat_request, messages_from_items
from maxcli.serve.state import ServerState, get_state, require_api_key
from maxcli.serve.tools import ToolPlan, message_for, plan_tools

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/responses", response_model=None)
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    state = text_state(request, body.model)
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        previous = state.responses.get(body.previous_response_id)
        if previous is None:
            raise APIError(404, f"no stored response {body.previous_response_id!r} (responses are kept in memory, "
                           f"the last {state.settings.max_stored_responses} at most)", param="previous_response_id")
        history = previous.conversation
    chat = chat_request(body, history)
    messages = chat.chat_messages()
    driver = state.text_driver(messages)
    plan = plan_tools(chat, state.settings.tool_call_parser,
                      getattr(driver.engine.tokenizer.delegate, "chat_template", None), driver.engine.grammars)
    params = sampling_params_for(chat, state.config, chat.max_new_tokens, 0, grammar=plan.grammar)
    if plan.parser is not None:
        params.skip_special_tokens = False  # a format's markers may be special tokens
    job = GenerationJob(driver, state.settings.max_queue_size)
    await job.start([new_request(state.model_name, params, messages=messages, tools=plan.template_tools,
                                 lora=state.check_model(body.model))])
    reply = _Reply(state, body, history)
    if body.stream:
        return streaming(_guarded(job, _events(job, reply, plan)))
    gone = await run_to_end(job, request)
    if gone is not None:
        return gone
    choice = job.choices[0]
    builder = OutputBuilder(emit=False)
    builder.push_message(message_for(plan, choice.text)[0])
    return JSONResponse(reply.final(choice, builder))


@router.get("/v1/responses/{response_id}")
async def retrieve_response(response_id: str, request: Request) -> dict[str, Any]:
    entry = get_state(request).responses.get(response_id)
    if entry is None:
        raise APIError(404, f"no stored response {response_id!r}", param="response_id", code="not_found")
    return entry.response


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> dict[str, Any]:
    if not get_state(request).responses.delete(response_id):
        raise APIError(404, f"no stored response {response_id!r}", param="response_id", code="not_found")
    return {"id": response_id, "object": "response", "deleted": True}


class _Reply:
    """The response object of one request, as it is announced (in progress) and as it ends."""

    def __init__(self, state: ServerState, body: ResponsesRequest, history: list[dict[str, Any]]) -> None:
        self.state, self.body, self.history = state, body, history
        self.head = {"id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": int(time.time()),
                     "model": state.model_name, **body.echo_fields()}

    def in_progress(self) -> dict[str, Any]:
        return {**self.head, "status": "in_progress", "output": [], "usage": None, "error": None,
                "incomplete_details": None}

    def final(self, choice: Choice, builder: OutputBuilder) -> dict[str, Any]:
        incomplete = choice.finish_reason == "length"
        items = builder.finish(incomplete)
        ctx = choice.context
        response = {
            **self.head, "status": "incomplete" if incomplete else "completed", "output": items, "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "usage": {"input_tokens": ctx.prompt_len, "input_tokens_details": {"cached_tokens": ctx.num_cached_tokens},
                      "output_tokens": ctx.num_output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": ctx.prompt_len + ctx.num_output_tokens},
        }
        if self.body.store is not False:
            conversation = self.history + messages_from_items(self.body.items()) + conversation_messages(items)
            self.state.responses.put(StoredResponse(response, conversation))
        return response


def _sse(event: dict[str, Any], sequence: int) -> str:
    payload = {**event, "sequence_number": sequence}
    return f"event: {event['type']}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _events(job: GenerationJob, reply: _Reply, plan: ToolPlan) -> AsyncIterator[dict[str, Any]]:
    yield {"type": "response.created", "response": reply.in_progress()}
    yield {"type": "response.in_progress", "response": reply.in_progress()}
    builder = OutputBuilder(emit=True)
    streamer = plan.streamer()
    final: dict[str, Any] | None = None
    async for choice, out in job.outputs():
        for delta in plan.deltas(streamer, out.text_delta, out.finished):
            builder.push(delta)
        if out.finished:
            final = reply.final(choice, builder)
        for event in builder.events:
            yield event
        builder.events.clear()
    if final is not None:  # None: the job was aborted (the client left)
        kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
        yield {"type": kind, "response": final}


async def _guarded(job: GenerationJob, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[str]:
    """Numbers the events, reports a mid-stream failure as an `error` event, and aborts the job however the
    stream ends (a client that leaves cancels this generator, which frees the request's KV pages)."""
    sequence = 0
    try:
        async for event in events:
            yield _sse(event, sequence)
            sequence += 1
    except APIError as exc:
        yield _sse({"type": "error", "code": exc.code, "message": exc.message, "param": exc.param}, sequence)
    finally:
        job.abort()
