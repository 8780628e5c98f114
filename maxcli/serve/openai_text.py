"""POST /v1/completions: OpenAI semantics over the engine driver.

Each of n choices (for every prompt) is its own engine request; they share a batch and the prompt's
prefix-cached pages. Streaming replies are SSE chunks ending with `data: [DONE]`; a client that goes away
mid-stream cancels the response task, whose `finally` aborts the unfinished choices (freeing their KV
pages before the engine's next step).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from maxcli.serve.jobs import GenerationJob, new_request, sampling_params_for
from maxcli.serve.logprobs import TokenTexts, completion_logprobs, visible_output_count
from maxcli.serve.openai_common import guarded, run_to_end, sse, streaming, text_state, usage, visible_new
from maxcli.serve.schemas import CompletionRequest
from maxcli.serve.state import require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


# -- completions ----------------------------------------------------------------------------------------


@router.post("/v1/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request) -> Response:
    state = text_state(request, body.model)
    prompts = body.prompts()
    driver = state.text_driver(prompts[0] if prompts else None)
    lora = state.check_model(body.model)
    requests = [
        new_request(state.model_name,
                    sampling_params_for(body, state.config, body.max_tokens, i, body.logprobs, echo=body.echo),
                    prompt=p, lora=lora)
        for p in prompts
        for i in range(body.n)
    ]
    job = GenerationJob(driver, state.settings.max_queue_size)
    await job.start(requests)
    texts = TokenTexts(driver.engine.tokenizer)
    prompt_texts = [p if isinstance(p, str) else texts.decode(p) for p in prompts]
    head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": body.model}
    if body.stream:
        return streaming(guarded(job, _completion_events(job, body, head, texts, prompt_texts)))
    gone = await run_to_end(job, request)
    if gone is not None:
        return gone
    choices = []
    for c in job.choices:
        echo = prompt_texts[c.index // body.n] if body.echo else ""
        logprobs = None
        if body.logprobs is not None:
            logprobs = completion_logprobs(texts, c.context, echo=body.echo, output_count=visible_output_count(c.context))
        choices.append({"index": c.index, "text": echo + c.text, "logprobs": logprobs, "finish_reason": c.finish_reason})
    return JSONResponse({**head, "object": "text_completion", "choices": choices, "usage": usage(job, body.n)})


async def _completion_events(job: GenerationJob, body: CompletionRequest, head: dict[str, Any], texts: TokenTexts,
                             prompt_texts: list[str]) -> AsyncIterator[str]:
    def chunk(index: int, text: str, logprobs: Any, finish: str | None) -> str:
        payload = {**head, "object": "text_completion",
                   "choices": [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}]}
        if body.include_usage:
            payload["usage"] = None
        return sse(payload)

    echoed: set[int] = set()
    async for choice, out in job.outputs():
        text, logprobs = out.text_delta, None
        first = body.echo and choice.index not in echoed
        if first:
            echoed.add(choice.index)
            text = prompt_texts[choice.index // body.n] + text
        if body.logprobs is not None:
            ids, entries = visible_new(choice.context, out)
            logprobs = completion_logprobs(texts, choice.context, echo=first, output_ids=ids, output_entries=entries)
        if not text and not out.finished and not (logprobs and logprobs["tokens"]):
            continue
        yield chunk(choice.index, text, logprobs, out.finish_reason if out.finished else None)
    if body.include_usage:
        yield sse({**head, "object": "text_completion", "choices": [], "usage": usage(job, body.n)})
