"""GET /v1/models, /v1/models/{id}, /health, /metrics and POST /v1/embeddings."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from maxcli.serve.errors import error_response
from maxcli.serve.metrics import CONTENT_TYPE
from maxcli.serve.schemas import EmbeddingRequest
from maxcli.serve.state import ServerState, get_state, require_api_key

v1 = APIRouter(dependencies=[Depends(require_api_key)])
public = APIRouter()


def _model_card(state: ServerState, adapter: str | None = None) -> dict[str, Any]:
    """The base model's card, or a LoRA adapter's (with `parent`: the base model, as vLLM lists them)."""
    card = {"id": adapter or state.model_name, "object": "model", "created": state.created, "owned_by": "maxcli",
            "root": state.config.model_path, "parent": None}
    if adapter is not None:
        managers = state.lora_managers()
        card.update(parent=state.model_name, root=managers[0].sources.get(adapter) if managers else None)
    return card


@v1.get("/v1/models")
async def list_models(request: Request) -> dict[str, Any]:
    state = get_state(request)
    return {"object": "list", "data": [_model_card(state), *(_model_card(state, a) for a in state.adapter_names())]}


@v1.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    state = get_state(request)
    return _model_card(state, state.check_model(model_id))


@public.get("/health")
async def health(request: Request) -> Response:
    state = get_state(request)
    if not state.ready:
        return error_response(503, "the model is still loading", code="model_loading")
    return JSONResponse({"status": "ok", "model": state.model_name})


@public.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE)


@v1.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    state = get_state(request)
    state.check_model(body.model)
    pipeline = state.require_embedder()
    inputs = body.inputs()

    def run() -> tuple[np.ndarray, list[int]]:
        with state.embed_lock:  # the pipeline is not re-entrant; one batch runs at a time
            return pipeline.embed_with_counts(inputs)

    vectors, counts = await asyncio.to_thread(run)
    data = []
    for i, vec in enumerate(np.asarray(vectors, dtype=np.float32)):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = int(sum(counts))
    return {"object": "list", "data": data, "model": state.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

