"""Every error the server answers: status code and OpenAI's error JSON, never a 500 or a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "smol"
KEY = "test-secret"
MAX_BODY = 4096
MAX_LENGTH = 64


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    args = ["--model", str(smollm2_gguf), "--served-model-name", MODEL, "--api-key", KEY,
            "--max-length", str(MAX_LENGTH), "--max-batch-size", "1", "--max-queue-size", "1",
            "--max-request-bytes", str(MAX_BODY)]
    yield from start_server(tmp_path_factory, "errors", args, api_key=KEY)


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=server.headers(), timeout=60) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *, contains: str = "", param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"] and "\n" not in err["message"]
    assert "Traceback" not in response.text
    assert contains.lower() in err["message"].lower()
    if param is not None:
        assert err["param"] == param
    return err


def chat(**overrides: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **overrides}


def test_health_is_503_until_the_model_is_loaded(server: ServerProcess) -> None:
    assert 503 in server.health_codes and server.health_codes[-1] == 200
    assert server.health_codes.index(200) == len(server.health_codes) - 1


def test_missing_or_wrong_api_key_is_401(server: ServerProcess) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat(), headers=headers)
        err = assert_error(r, 401, contains="api key")
        assert err["type"] == "authentication_error"
        assert_error(httpx.get(f"{server.base_url}/v1/models", headers=headers), 401)
    assert httpx.get(f"{server.base_url}/health").status_code == 200  # health and metrics need no key
    assert httpx.get(f"{server.base_url}/metrics").status_code == 200


def test_unknown_model_is_404(http: httpx.Client) -> None:
    assert_error(http.post("/v1/chat/completions", json=chat(model="gpt-4")), 404, contains="gpt-4", param="model")
    assert_error(http.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404, param="model")
    assert_error(http.get("/v1/models/some/other-model"), 404, contains="some/other-model")
    assert http.get(f"/v1/models/{MODEL}").json()["id"] == MODEL


def test_unknown_route_is_404_and_wrong_method_is_405(http: httpx.Client) -> None:
    assert_error(http.get("/v1/does-not-exist"), 404)
    assert_error(http.post("/nothing-here", json={}), 404)
    assert_error(http.get("/v1/chat/completions"), 405)
    assert_error(http.delete("/v1/models"), 405)


@pytest.mark.parametrize(
    "body, param",
    [
        (chat(foo=1), "foo"),  # unknown field
        (chat(temperature=-1), "temperature"),
        (chat(top_p=0), "top_p"),
        (chat(n=0), "n"),
        (chat(max_tokens=-5), "max_tokens"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), None),
        (chat(stop=[""]), "stop"),
        (chat(top_logprobs=3), "top_logprobs"),  # without logprobs=true
        (chat(frequency_penalty=3), "frequency_penalty"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),  # missing model
    ],
)
def test_invalid_chat_fields_are_400(http: httpx.Client, body: dict[str, Any], param: str | None) -> None:
    err = assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)
    assert err["type"] == "invalid_request_error"


def test_invalid_completion_inputs_are_400(http: httpx.Client) -> None:
    base = {"model": MODEL, "max_tokens": 1}
    assert_error(http.post("/v1/completions", json={**base, "prompt": []}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={**base, "prompt": [[]]}), 400, param="prompt")
    assert_error(http.post("/v1/completions", json={**base, "prompt": [10**9]}), 400, contains="token")
    assert_error(http.post("/v1/completions", json={**base, "prompt": "x", "logprobs": 50}), 400, param="logprobs")
    assert_error(http.post("/v1/completions", json={**base, "prompt": {"a": 1}}), 400)


def test_malformed_json_is_400(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", content=b'{"model": "smol", ', headers={"content-type": "application/json"})
    assert_error(r, 400, contains="json")
    assert_error(http.post("/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"}), 400)


def test_prompt_longer_than_context_is_400(http: httpx.Client) -> None:
    long_prompt = " ".join(["word"] * (MAX_LENGTH * 2))
    err = assert_error(http.post("/v1/completions", json={"model": MODEL, "prompt": long_prompt}), 400)
    assert "max_length" in err["message"] or "longer" in err["message"]
    assert_error(http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": long_prompt}])), 400)


def test_oversized_body_is_413(http: httpx.Client) -> None:
    body = chat(messages=[{"role": "user", "content": "x" * (MAX_BODY * 2)}])
    assert_error(http.post("/v1/chat/completions", json=body), 413, contains="larger")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        data = json.dumps(body).encode()
        for i in range(0, len(data), 1024):
            yield data[i : i + 1024]

    assert_error(http.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}), 413)


def test_embeddings_on_a_text_model_is_400(http: httpx.Client) -> None:
    assert_error(http.post("/v1/embeddings", json={"model": MODEL, "input": "hi"}), 400, contains="embeddings")


def test_full_queue_is_503_and_pages_are_freed_after(server: ServerProcess, http: httpx.Client) -> None:
    """Batch size 1, queue size 1: one request runs, one waits, the next is refused."""
    long = chat(max_tokens=40, stream=True, ignore_eos=True)
    with http.stream("POST", "/v1/chat/completions", json=long) as running:
        assert running.status_code == 200
        assert server.wait_metric("maxcli_num_requests_running", 1.0) == 1.0  # in the batch
        with http.stream("POST", "/v1/chat/completions", json=long) as waiting:
            assert waiting.status_code == 200
            assert server.wait_metric("maxcli_num_requests_waiting", 1.0) == 1.0
            err = assert_error(http.post("/v1/chat/completions", json=chat()), 503, contains="queue")
            assert err["code"] == "queue_full"
        # leaving the blocks disconnects both clients: their requests are aborted
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0
    assert server.wait_metric("maxcli_num_requests_waiting", 0.0) == 0.0
    ok = http.post("/v1/chat/completions", json=chat())
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] <= 2


def test_no_server_errors_were_counted(server: ServerProcess) -> None:
    text = httpx.get(f"{server.base_url}/metrics").text
    assert 'status="5' not in text.replace('status="503"', "")


def test_a_model_that_cannot_load_ends_the_server_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.serve.conftest import free_port

    missing = tmp_path / "missing.gguf"
    done = subprocess.run([sys.executable, "-m", "maxcli", "serve", "--model", str(missing), "--port", str(free_port())],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0]
    assert "Traceback" not in done.stderr
