"""The FastAPI app and `run_server`, the entry point of `maxcli serve`.

Startup order: uvicorn binds and answers at once (/health: 503), a loader thread builds the model and
starts the engine thread (/health: 200 from then on). SIGTERM (uvicorn's handler) stops accepting
connections, lets in-flight requests finish for up to drain_timeout seconds, cancels the rest (their
KV pages are freed by the cancellation), then stops the engine thread.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import uvicorn
from fastapi import FastAPI

from maxcli.config import ConfigError, PipelineConfig, PipelineEngine
from maxcli.interfaces import PipelineTask
from maxcli.serve.driver import EngineDriver
from maxcli.serve.errors import install_error_handlers
from maxcli.serve.middleware import BodySizeLimit, CountRequests
from maxcli.serve.replicas import ReplicaRouter, replica_config
from maxcli.serve.lora_routes import router as lora_router
from maxcli.serve.openai_chat import router as chat_router
from maxcli.serve.openai_responses import router as responses_router
from maxcli.serve.openai_text import router as text_router
from maxcli.serve.routes import public, v1
from maxcli.serve.tokenize import router as tokenize_router
from maxcli.serve.state import ServerSettings, ServerState

logger = logging.getLogger("maxcli.serve")


def create_app(config: PipelineConfig, settings: ServerSettings, on_load_failure: Callable[[str], None] | None = None) -> FastAPI:
    """The app; entering its lifespan starts loading the model in a background thread."""
    state = ServerState(config=config, settings=settings, model_name=config.model_name, created=int(time.time()))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=_load_model, args=(state, on_load_failure), name="maxcli-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            if state.router is not None:
                state.router.stop()

    app = FastAPI(title="maxcli", summary="OpenAI-compatible API of maxcli", lifespan=lifespan)
    app.state.server = state
    install_error_handlers(app)
    app.include_router(chat_router)
    app.include_router(text_router)
    app.include_router(responses_router)
    app.include_router(tokenize_router)
    app.include_router(lora_router)
    app.include_router(v1)
    app.include_router(public)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(CountRequests, metrics=state.metrics)  # outermost: counts 413s too
    return app


def _load_model(state: ServerState, on_failure: Callable[[str], None] | None) -> None:
    config = state.config
    try:
        from maxcli.pipelines.lib.entrypoints import resolve_model

        config, task = resolve_model(config)  # the one architecture lookup; the loads below reuse it
        if task is PipelineTask.EMBEDDINGS_GENERATION:
            from maxcli.pipelines.lib.entrypoints import load_embeddings_pipeline

            embedder = load_embeddings_pipeline(config)
            state.task, state.embedder = task, embedder
            logger.info("model %s ready (embeddings, dim %s, device %s)", state.model_name,
                        getattr(embedder, "embedding_dim", "?"), config.device)
            return
        from maxcli.pipelines.lib.entrypoints import load_engine

        drivers = []
        try:
            for i in range(config.data_parallel_degree):
                engine = load_engine(replica_config(config, i))
                drivers.append(EngineDriver(engine, state.metrics))
                resolved = getattr(engine.pipeline, "pipeline_config", config)
                kv = engine.pipeline.kv_manager
                logger.info("replica %d of %s ready: encoding %s, device %s, tensor parallel %d, "
                            "KV cache %d pages x %d tokens, max length %d", i, state.model_name,
                            resolved.quantization_encoding, resolved.device, config.tensor_parallel_size,
                            kv.total_num_pages, kv.page_size, engine.pipeline.max_seq_len)
        except BaseException:
            for d in drivers:
                d.engine.close()
            raise
        for d in drivers:
            d.start()
            # llguidance's view of the tokenizer (~0.8 s for a 151k vocabulary) before the first grammar needs it
            threading.Thread(target=d.engine.grammars.prepare, name="grammar-tokenizer", daemon=True).start()
        state.task, state.router = task, ReplicaRouter(drivers)
    except Exception as exc:  # the model cannot be served: report one line and stop the server
        message = next((ln for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        logger.debug("model load failed", exc_info=True)
        if on_failure is not None:
            on_failure(message)


def run_server(
    config: PipelineConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_queue_size: int = 256,
    max_request_bytes: int = 8 * 1024 * 1024,
    drain_timeout: float = 30.0,
    tool_call_parser: str = "auto",
    max_stored_responses: int = 1024,
) -> None:
    """Serve until SIGINT/SIGTERM; raises RuntimeError (after shutting down) if the model fails to load."""
    from maxcli.pipelines.lib.custom import prepare_config

    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)  # a server always logs its startup (model, device, KV cache, URL)
    config = prepare_config(config)
    from maxcli.distributed.launch import run_if_torchrun_worker

    run_if_torchrun_worker(config)  # under torchrun, ranks > 0 never serve HTTP: they run rank 0's steps
    from maxcli.serve.tool_parsers import PARSER_NAMES

    if tool_call_parser not in PARSER_NAMES:
        raise ConfigError(f"--tool-call-parser must be one of {', '.join(PARSER_NAMES)}, got {tool_call_parser!r}")
    settings = ServerSettings(api_key, max_queue_size, max_request_bytes, drain_timeout, tool_call_parser,
                              max_stored_responses)
    failure: list[str] = []
    server: Any = None

    def on_load_failure(message: str) -> None:
        failure.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(config, settings, on_load_failure)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                               timeout_graceful_shutdown=drain_timeout, lifespan="on")
    server = _DrainingServer(uv_config)
    auth = "bearer key required" if api_key else "no auth"
    logger.info("serving %s at http://%s:%d (%s); loading the model", config.model_name, host, port, auth)
    server.run()
    if failure:
        raise RuntimeError(f"cannot serve {config.model_name}: {failure[0]}")
    logger.info("server stopped")



class _DrainingServer(uvicorn.Server):
    """uvicorn re-raises a captured SIGTERM after its graceful shutdown, so the process dies by the
    signal; a server that drained its requests has finished its work and exits with status 0 instead.
    SIGINT still ends as KeyboardInterrupt (the CLI's 'aborted')."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        seen: list[int] = []

        def on_signal(sig: int, frame: Any) -> None:
            seen.append(sig)
            self.handle_exit(sig, frame)

        original = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
        if signal.SIGINT in seen:
            raise KeyboardInterrupt
