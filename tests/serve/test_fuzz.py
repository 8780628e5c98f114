"""Fuzz every operation of the published OpenAPI schema (schemathesis + hypothesis): no 5xx, ever.

Bounded: a few dozen examples per operation, generated lengths capped by the tiny model's 256-token
context and by clipping the requested token counts to keep each generation short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.serve.conftest import CUSTOM_ARCHITECTURES, ServerProcess, start_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

MODEL = "fuzz-model"
KEY = "fuzz-key"
EXAMPLES_PER_OPERATION = 20
MAX_FUZZ_PROMPTS = 4
MAX_FUZZ_TOKENS = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_custom_model: Path) -> Iterator[ServerProcess]:
    args = ["--model", str(tiny_custom_model), "--custom-architectures", str(CUSTOM_ARCHITECTURES),
            "--served-model-name", MODEL, "--quantization-encoding", "float32", "--api-key", KEY,
            "--max-request-bytes", "65536"]
    yield from start_server(tmp_path_factory, "fuzz", args, api_key=KEY)


def _short(body: Any, path: str) -> Any:
    """Keep a fuzzed generation short: clip token counts, choices and prompt batches (the rest is left as
    generated)."""
    if isinstance(body, dict):
        body = dict(body)
        if "model" in body:
            body["model"] = MODEL  # unknown models are a quick 404 (tested elsewhere); reach the engine
        for key in ("max_tokens", "max_completion_tokens", "max_output_tokens", "min_tokens"):
            if isinstance(body.get(key), int) and body[key] > MAX_FUZZ_TOKENS:
                body[key] = MAX_FUZZ_TOKENS
        if path == "/v1/responses" and not isinstance(body.get("max_output_tokens"), int):
            body["max_output_tokens"] = MAX_FUZZ_TOKENS
        elif path in ("/v1/chat/completions", "/v1/completions") and body.get("max_tokens") is None \
                and body.get("max_completion_tokens") is None:
            body["max_tokens"] = MAX_FUZZ_TOKENS
        if isinstance(body.get("n"), int) and body["n"] > 2:
            body["n"] = 2
        for key in ("prompt", "input"):  # a batch of many prompts is many requests
            if isinstance(body.get(key), list) and body[key] and isinstance(body[key][0], (str, list)):
                body[key] = body[key][:MAX_FUZZ_PROMPTS]
    return body


def test_openapi_schema_fuzz_has_no_server_errors(server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                                              "/v1/responses", "/v1/responses/{response_id}", "/tokenize",
                                              "/detokenize", "/v1/models", "/v1/models/{model_id}", "/health",
                                              "/metrics"}
    failures: list[str] = []
    statuses: dict[str, list[int]] = {}
    for op in operations:

        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def fuzz(case: Any) -> None:
            if case.body is not None:
                case.body = _short(case.body, op.path)
            for headers in (server.headers(), {}):
                response = case.call(base_url=server.base_url, headers=headers, timeout=60)
                statuses.setdefault(op.path, []).append(response.status_code)
                if response.status_code >= 500 and not (response.status_code == 503 and "queue" in response.text):
                    failures.append(f"{op.method.upper()} {op.path} {case.body!r} -> {response.status_code} {response.text[:200]}")
                if response.status_code >= 400:
                    assert set(response.json()) == {"error"}, response.text

        fuzz()
    assert not failures, "\n".join(failures[:10])
    # the fuzz reached generation and tokenization, not only errors (and the checks schemas cannot state)
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses", "/tokenize"):
        assert 200 in statuses[path], (path, sorted(set(statuses[path])))
    for path in ("/v1/chat/completions", "/v1/completions"):
        assert 400 in statuses[path], (path, sorted(set(statuses[path])))
    assert 'status="500"' not in server.metric_text()
