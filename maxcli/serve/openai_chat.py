"""POST /v1/chat/completions: OpenAI semantics over the engine driver, with function tools.

Each of n choices is its own engine request; they share a batch and the prompt's prefix-cached pages.
With tools, each reply goes through the tool-call parser (maxcli.serve.tools): non-streamed replies carry
`tool_calls` and finish with "tool_calls"; streamed ones send OpenAI's tool-call deltas (index, id and name
first, then argument fragments), which concatenate to the non-streamed reply.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from maxcli.serve.errors import APIError
from maxcli.serve.jobs import GenerationJob, new_request, sampling_params_for
from maxcli.serve.logprobs import TokenTexts, chat_logprobs, visible_output_count
from maxcli.serve.openai_common import guarded, run_to_end, sse, streaming, text_state, usage, visible_new
from maxcli.serve.schemas import ChatCompletionRequest
from maxcli.serve.state import require_api_key
from maxcli.serve.tools import ToolPlan, message_for, plan_tools

router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
    state = text_state(request, body.model)
    try:
        num_logprobs = body.num_logprobs
    except ValueError as exc:
        raise APIError(400, str(exc), param="top_logprobs") from None
    messages = body.chat_messages()
    driver = state.text_driver(messages)
    tokenizer = driver.engine.tokenizer
    plan = plan_tools(body, state.settings.tool_call_parser, getattr(tokenizer.delegate, "chat_template", None),
                      driver.engine.grammars)
    params = [sampling_params_for(body, state.config, body.max_new_tokens, i, num_logprobs, grammar=plan.grammar)
              for i in range(body.n)]
    for p in params if plan.parser is not None else []:
        p.skip_special_tokens = False  # a format's markers may be special tokens (Mistral's [TOOL_CALLS])
    lora = state.check_model(body.model)
    requests = [new_request(state.model_name, p, messages=messages, tools=plan.template_tools, lora=lora) for p in params]
    job = GenerationJob(driver, state.settings.max_queue_size)
    await job.start(requests)
    texts = TokenTexts(tokenizer)
    head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        return streaming(guarded(job, _chat_events(job, body, head, texts, plan)))
    gone = await run_to_end(job, request)
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
        message, calls = message_for(plan, c.text)
        choices.append({
            "index": c.index,
            "message": message,
            "logprobs": logprobs,
            "finish_reason": "tool_calls" if calls and c.finish_reason == "stop" else c.finish_reason,
        })
    return JSONResponse({**head, "object": "chat.completion", "choices": choices, "usage": usage(job, body.n)})


async def _chat_events(job: GenerationJob, body: ChatCompletionRequest, head: dict[str, Any],
                       texts: TokenTexts, plan: ToolPlan) -> AsyncIterator[str]:
    def chunk(index: int, delta: dict[str, Any], logprobs: Any = None, finish: str | None = None) -> str:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        payload = {**head, "object": "chat.completion.chunk", "choices": [choice]}
        if body.include_usage:
            payload["usage"] = None
        return sse(payload)

    streamers = {c.index: plan.streamer() for c in job.choices}
    called: set[int] = set()
    for c in job.choices:
        yield chunk(c.index, {"role": "assistant", "content": ""})
    async for choice, out in job.outputs():
        logprobs = None
        if body.logprobs:
            ids, entries = visible_new(choice.context, out)
            logprobs = {"content": chat_logprobs(texts, ids, entries)}
        deltas = plan.deltas(streamers[choice.index], out.text_delta, out.finished)
        if any("tool_calls" in d for d in deltas):
            called.add(choice.index)
        finish = out.finish_reason if out.finished else None
        if finish == "stop" and choice.index in called:
            finish = "tool_calls"
        if not deltas:
            if out.finished or (logprobs and logprobs["content"]):
                yield chunk(choice.index, {}, logprobs, finish)
            continue
        for k, delta in enumerate(deltas):
            last = k == len(deltas) - 1
            yield chunk(choice.index, delta, logprobs if k == 0 else None, finish if last else None)
    if body.include_usage:
        yield sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(job, body.n)})

