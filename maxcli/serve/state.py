"""What the routes share: settings, the loaded model (engine driver or embeddings pipeline), metrics.

The model loads in a background thread after the HTTP server is up; until it is ready every model
route answers 503 and /health answers 503.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from maxcli.config import PipelineConfig
from maxcli.interfaces import PipelineTask
from maxcli.serve.driver import EngineDriver, EngineStats
from maxcli.serve.errors import APIError
from maxcli.serve.metrics import ServerMetrics
from maxcli.serve.replicas import ReplicaRouter, affinity_key
from maxcli.serve.response_store import ResponseStore


@dataclass(frozen=True)
class ServerSettings:
    api_key: str | None = None
    max_queue_size: int = 256
    max_request_bytes: int = 8 * 1024 * 1024
    drain_timeout: float = 30.0
    tool_call_parser: str = "auto"  # maxcli.serve.tool_parsers.PARSER_NAMES
    max_stored_responses: int = 1024  # /v1/responses kept for previous_response_id (0: none)


@dataclass
class ServerState:
    config: PipelineConfig
    settings: ServerSettings
    model_name: str
    created: int
    task: PipelineTask | None = None
    router: ReplicaRouter | None = None  # the engine replicas (one without data parallelism)
    embedder: Any = None
    embed_lock: threading.Lock = field(default_factory=threading.Lock)  # one embeddings batch at a time
    metrics: ServerMetrics = field(init=False)
    responses: ResponseStore = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.replica_stats)
        self.responses = ResponseStore(self.settings.max_stored_responses)

    def replica_stats(self) -> list[tuple[EngineStats, int]]:
        """(latest engine snapshot, jobs routed) of each replica, for /metrics."""
        if self.router is None:
            return []
        return [(d.stats, n) for d, n in zip(self.router.drivers, self.router.routed)]

    @property
    def ready(self) -> bool:
        if self.task is PipelineTask.EMBEDDINGS_GENERATION:
            return self.embedder is not None
        return self.router is not None and self.router.alive

    def text_driver(self, prompt: Any = None) -> EngineDriver:
        """The engine replica for a job on `prompt` (text, token ids or chat messages: prefix affinity),
        or the error a text-generation route must answer."""
        if not self.ready:
            raise APIError(503, "the model is still loading; retry shortly", code="model_loading")
        if self.router is None:
            raise APIError(400, f"model {self.model_name!r} is an embeddings model; use /v1/embeddings",
                           code="unsupported_task")
        return self.router.pick(None if prompt is None else affinity_key(prompt))

    def require_embedder(self) -> Any:
        if not self.ready:
            raise APIError(503, "the model is still loading; retry shortly", code="model_loading")
        if self.embedder is None:
            raise APIError(400, f"model {self.model_name!r} does not produce embeddings", code="unsupported_task")
        return self.embedder

    def lora_managers(self) -> list[Any]:
        """Each replica's LoRAManager (empty without --enable-lora or before the model is ready)."""
        if self.router is None:
            return []
        return [m for d in self.router.drivers if (m := d.engine.lora) is not None]

    def adapter_names(self) -> list[str]:
        managers = self.lora_managers()
        if managers:
            return managers[0].names()
        return list(self.config.lora.adapters) if self.config.lora.enable_lora else []  # still loading

    def check_model(self, name: str) -> str | None:
        """The LoRA adapter a request's `model` names (None: the base model); 404 for anything else."""
        if name == self.model_name:
            return None
        if name in self.adapter_names():
            return name
        served = ", ".join(repr(n) for n in [self.model_name, *self.adapter_names()])
        raise APIError(404, f"model {name!r} does not exist; this server serves {served}",
                       param="model", code="model_not_found")


def get_state(request: Request) -> ServerState:
    return request.app.state.server


async def require_api_key(request: Request) -> None:
    """Bearer authentication for /v1 routes when the server has an API key (constant-time compare)."""
    key = get_state(request).settings.api_key
    if key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise APIError(401, "missing or invalid API key (send 'Authorization: Bearer <key>')", code="invalid_api_key")
