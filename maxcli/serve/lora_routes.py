"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's and MAX's routes), behind --api-key.

Loading reads and checks the adapter on every engine replica (a bad folder is a 400 naming the problem);
unloading an adapter with requests in flight lets them finish first (the adapter stops being offered at
once). Both answer plain text, as vLLM does.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field

from maxcli.lora import LoRAError, UnknownAdapter
from maxcli.serve.errors import APIError
from maxcli.serve.state import ServerState, get_state, require_api_key

router = APIRouter(dependencies=[Depends(require_api_key)])


class LoadLoRARequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRARequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None  # vLLM's field; names identify adapters here


def _managers(state: ServerState) -> list:
    if not state.ready:
        state.text_driver()  # 503 while loading, 400 for an embeddings model
    managers = state.lora_managers()
    if not managers:
        raise APIError(400, "LoRA is not enabled on this server (start it with --enable-lora)", code="lora_disabled")
    return managers


@router.post("/v1/load_lora_adapter", response_class=PlainTextResponse)
async def load_lora_adapter(body: LoadLoRARequest, request: Request) -> str:
    state = get_state(request)
    managers = _managers(state)
    if body.lora_name == state.model_name:
        raise APIError(400, f"{body.lora_name!r} is the base model's name", param="lora_name")
    loaded = []
    try:
        for manager in managers:
            await asyncio.to_thread(manager.register, body.lora_name, body.lora_path)
            loaded.append(manager)
    except LoRAError as e:
        for manager in loaded:  # all replicas or none
            manager.unregister(body.lora_name)
        raise APIError(400, str(e), param="lora_path", code="invalid_lora_adapter") from None
    return f"Success: LoRA adapter '{body.lora_name}' added successfully."


@router.post("/v1/unload_lora_adapter", response_class=PlainTextResponse)
async def unload_lora_adapter(body: UnloadLoRARequest, request: Request) -> str:
    managers = _managers(get_state(request))
    try:
        done = [manager.unregister(body.lora_name) for manager in managers]
    except UnknownAdapter:
        raise APIError(404, f"LoRA adapter {body.lora_name!r} is not loaded", param="lora_name",
                       code="lora_not_found") from None
    later = "" if all(done) else " (after its requests in flight finish)"
    return f"Success: LoRA adapter '{body.lora_name}' removed successfully{later}."
