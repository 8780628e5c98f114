"""POST /tokenize and /detokenize in vLLM's shapes, with the served model's own tokenizer.

/tokenize takes a `prompt` (encoded as /v1/completions would, special tokens added by default) or chat
`messages` (rendered by the chat template, as /v1/chat/completions would, with the generation prompt by
default); it answers the token ids, their `count` and the model's `max_model_len`. /detokenize answers the
text of `tokens`. Both sit behind --api-key like the /v1 routes.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional, Union

from fastapi import APIRouter, Depends, Request
from pydantic import Discriminator, Field, Tag

from maxcli.interfaces import InputError
from maxcli.serve.openai_common import text_state
from maxcli.serve.schemas import ChatMessage, Tool, _Strict
from maxcli.serve.state import get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


class TokenizePrompt(_Strict):
    model: Optional[str] = None  # the served model when omitted
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeMessages(_Strict):
    model: Optional[str] = None
    messages: list[ChatMessage] = Field(min_length=1)
    tools: Optional[list[Tool]] = Field(None, max_length=128)
    add_generation_prompt: bool = True
    add_special_tokens: bool = False  # the template writes the special tokens
    return_token_strs: bool = False


def _tokenize_form(value: Any) -> str:
    has_messages = isinstance(value, dict) and "messages" in value
    return "TokenizeMessages" if has_messages or isinstance(value, TokenizeMessages) else "TokenizePrompt"


TokenizeRequest = Annotated[Union[Annotated[TokenizePrompt, Tag("TokenizePrompt")],
                                  Annotated[TokenizeMessages, Tag("TokenizeMessages")]], Discriminator(_tokenize_form)]


class DetokenizeRequest(_Strict):
    model: Optional[str] = None
    tokens: list[int] = Field(max_length=1_000_000)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> dict[str, Any]:
    state = text_state(request, body.model or get_state(request).model_name)
    engine = state.text_driver().engine
    tokenizer = engine.tokenizer

    def run() -> list[int]:
        if isinstance(body, TokenizeMessages):
            messages = [m.template_message() for m in body.messages]
            tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=body.add_generation_prompt, tools=tools)
        else:
            text = body.prompt
        return list(tokenizer.delegate.encode(text, add_special_tokens=body.add_special_tokens))

    ids = await asyncio.to_thread(run)
    return {"count": len(ids), "max_model_len": engine.pipeline.max_seq_len, "tokens": ids,
            "token_strs": tokenizer.token_strings(ids) if body.return_token_strs else None}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> dict[str, Any]:
    state = text_state(request, body.model or get_state(request).model_name)
    tokenizer = state.text_driver().engine.tokenizer
    vocab = tokenizer.vocab_size
    bad = next((t for t in body.tokens if not 0 <= t < vocab), None)
    if bad is not None:
        raise InputError(f"token {bad} is not a token id in [0, {vocab})")
    return {"prompt": await tokenizer.decode(body.tokens)}
