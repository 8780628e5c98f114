"""Serve a model behind an OpenAI-compatible HTTP API (chat, completions, responses, embeddings, tokenize, models, metrics)."""

from __future__ import annotations

import os
from typing import Optional

import typer

from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig


@pipeline_options
def serve(
    config: PipelineConfig,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help="Require this bearer token on every /v1 route (env MAXCLI_API_KEY)."
    ),
    max_queue_size: int = typer.Option(
        256, "--max-queue-size", min=1, help="Requests allowed to wait for a batch slot; more get 503."
    ),
    max_request_bytes: int = typer.Option(
        8 * 1024 * 1024, "--max-request-bytes", min=1024, help="Largest request body accepted (413 above)."
    ),
    drain_timeout: float = typer.Option(
        30.0, "--drain-timeout", min=0.0, help="Seconds SIGTERM waits for in-flight requests before exiting."
    ),
    tool_call_parser: str = typer.Option(
        "auto", "--tool-call-parser", metavar="NAME",
        help="How replies are read for tool calls: hermes, llama3_json, mistral, pythonic, or auto (from the chat template).",
    ),
    max_stored_responses: int = typer.Option(
        1024, "--max-stored-responses", min=0,
        help="/v1/responses replies kept in memory for previous_response_id and GET (least recently used dropped; 0: none).",
    ),
) -> None:
    from maxcli.serve.app import run_server

    run_server(
        config,
        host=host,
        port=port,
        api_key=api_key or os.environ.get("MAXCLI_API_KEY") or None,
        max_queue_size=max_queue_size,
        max_request_bytes=max_request_bytes,
        drain_timeout=drain_timeout,
        tool_call_parser=tool_call_parser,
        max_stored_responses=max_stored_responses,
    )
