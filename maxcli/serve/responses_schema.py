"""The Responses API's request body (POST /v1/responses) as pydantic models, and its translation into the
chat request the engine already serves: input items become chat messages, `text.format` becomes
`response_format`, flat function tools become chat tools. Unknown fields are a 400, as on the other routes.

Input items a client sends back unchanged from an earlier response (`input += response.output`) validate:
output messages carry `id`/`status`/annotations, function calls carry `id`/`status`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from maxcli.serve.errors import APIError, describe_validation_error
from maxcli.serve.schemas import (
    _FUNCTION_NAME,
    ChatCompletionRequest,
    JSONSchema,
    _Strict,
)


class InputText(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: Optional[list[Any]] = None  # output_text echoed back; carries no input
    logprobs: Optional[list[Any]] = None


class Refusal(_Strict):
    type: Literal["refusal"]
    refusal: str


ContentItem = Annotated[Union[InputText, Refusal], Field(discriminator="type")]


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: Union[str, list[ContentItem]]
    id: Optional[str] = None
    status: Optional[Literal["in_progress", "completed", "incomplete"]] = None
    phase: Optional[str] = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text if isinstance(p, InputText) else p.refusal for p in self.content)


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: Optional[str] = None
    status: Optional[Literal["in_progress", "completed", "incomplete"]] = None


class FunctionCallOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: Union[str, list[InputText]]
    id: Optional[str] = None
    status: Optional[Literal["in_progress", "completed", "incomplete"]] = None

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


def _item_kind(value: Any) -> str:
    if isinstance(value, dict):
        return value.get("type", "message")
    return getattr(value, "type", "message")


InputItem = Annotated[
    Union[Annotated[MessageItem, Tag("message")], Annotated[FunctionCallItem, Tag("function_call")],
          Annotated[FunctionCallOutputItem, Tag("function_call_output")]],
    Discriminator(_item_kind),
]


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(pattern=_FUNCTION_NAME)
    description: Optional[str] = None
    parameters: Optional[JSONSchema] = None
    strict: Optional[bool] = None


class NamedFunctionChoice(_Strict):
    type: Literal["function"]
    name: str


class TextFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: Literal["text", "json_object", "json_schema"]
    name: Optional[str] = Field(None, min_length=1, max_length=64)
    description: Optional[str] = None
    json_schema: Optional[JSONSchema] = Field(None, alias="schema")
    strict: Optional[bool] = None


class TextOptions(_Strict):
    format: Optional[TextFormat] = None
    verbosity: Optional[str] = None  # accepted and ignored


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1)
    input: Union[str, list[InputItem]]
    instructions: Optional[str] = None
    max_output_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    text: Optional[TextOptions] = None
    tools: Optional[list[FunctionTool]] = Field(None, max_length=128)
    tool_choice: Union[Literal["none", "auto", "required"], NamedFunctionChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    stream: bool = False
    store: Optional[bool] = None  # kept in the server's bounded in-memory store unless false
    previous_response_id: Optional[str] = None
    # accepted and ignored: they do not change the output
    metadata: Optional[dict[str, str]] = None
    user: Optional[str] = None
    truncation: Optional[Literal["disabled"]] = None
    service_tier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    safety_identifier: Optional[str] = None
    # extras (vLLM names)
    seed: Optional[int] = Field(None, ge=-(2**63), le=2**63 - 1)
    top_k: Optional[int] = Field(None, ge=-1)
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0, le=10.0)
    stop: Union[str, list[str], None] = Field(None)

    def items(self) -> list[Any]:
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return list(self.input)

    def echo_fields(self) -> dict[str, Any]:
        """The request's settings as the response object repeats them."""
        tools = [t.model_dump(exclude_none=True) for t in self.tools or []]
        choice = self.tool_choice.model_dump() if isinstance(self.tool_choice, BaseModel) else (self.tool_choice or "auto")
        fmt = self.text.format if self.text is not None and self.text.format is not None else None
        return {
            "instructions": self.instructions, "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature, "top_p": self.top_p, "tools": tools, "tool_choice": choice,
            "parallel_tool_calls": self.parallel_tool_calls is not False, "metadata": self.metadata or {},
            "previous_response_id": self.previous_response_id, "store": self.store is not False,
            "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
            "truncation": "disabled", "user": self.user,
        }


def messages_from_items(items: list[Any]) -> list[dict[str, Any]]:
    """Chat messages (OpenAI chat shape) from Responses input items. Consecutive function calls become one
    assistant message with several tool_calls; a function_call_output is a tool message."""
    messages: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") is not None:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        else:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
    return messages


def chat_request(body: ResponsesRequest, history: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat request equivalent to `body` after the stored conversation `history`."""
    # instructions apply to this turn only: the stored history never holds them (OpenAI's rule for
    # previous_response_id)
    instructions = [{"role": "system", "content": body.instructions}] if body.instructions else []
    messages = instructions + list(history) + messages_from_items(body.items())
    chat: dict[str, Any] = {"model": body.model, "messages": messages, "stream": False}
    for name in ("temperature", "top_p", "seed", "top_k", "min_p", "repetition_penalty", "stop",
                 "parallel_tool_calls"):
        value = getattr(body, name)
        if value is not None:
            chat[name] = value
    if body.max_output_tokens is not None:
        chat["max_completion_tokens"] = body.max_output_tokens
    if body.tools:
        chat["tools"] = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})}
                         for t in body.tools]
    if isinstance(body.tool_choice, NamedFunctionChoice):
        chat["tool_choice"] = {"type": "function", "function": {"name": body.tool_choice.name}}
    elif body.tool_choice is not None:
        chat["tool_choice"] = body.tool_choice
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.name is None:
            raise APIError(400, "text.format of type json_schema needs `name` and `schema`", param="text.format")
        spec = {"name": fmt.name, "schema": fmt.json_schema, "description": fmt.description, "strict": fmt.strict}
        chat["response_format"] = {"type": "json_schema", "json_schema": {k: v for k, v in spec.items() if v is not None}}
    try:
        return ChatCompletionRequest.model_validate(chat)
    except ValidationError as exc:  # a rule of the chat request the Responses shape does not state itself
        message, param = describe_validation_error(RequestValidationError(exc.errors()))
        raise APIError(400, message, param=param) from None
