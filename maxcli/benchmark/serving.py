"""Serving mode: streaming /v1/completions requests to a running OpenAI-compatible server (httpx async).

Each request waits for its Poisson arrival offset, then for a free slot when --max-concurrency is set,
and is timed from the moment it is sent. Every SSE chunk with text is one token arrival; the final
usage chunk (stream_options.include_usage) gives the exact prompt and output token counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Optional

from maxcli.benchmark import BenchmarkError
from maxcli.benchmark.dataset import BenchRequest
from maxcli.benchmark.metrics import RequestRecord


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise BenchmarkError("serving mode needs httpx: pip install httpx (or pip install 'maxcli[bench]')") from None
    return httpx


def normalize_base_url(url: str) -> str:
    """http(s)://host:port without a trailing slash or /v1 (both spellings of the OpenAI base URL work)."""
    httpx = _httpx()
    try:
        parsed = httpx.URL(url)
    except Exception as e:  # noqa: BLE001 - httpx raises InvalidURL / TypeError on garbage
        raise BenchmarkError(f"--base-url {url!r} is not a URL: {e}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BenchmarkError(f"--base-url {url!r} must look like http://host:port")
    base = str(parsed).rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def _headers(api_key: Optional[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _error_message(status: int, body: bytes) -> str:
    try:
        err = json.loads(body).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        msg = None
    first = (str(msg or body.decode("utf-8", "replace")).strip().splitlines() or [""])[0]
    return f"HTTP {status}: {first[:200]}"


def served_models(base_url: str, api_key: Optional[str]) -> list[str]:
    """Model ids from GET /v1/models: proves the server is reachable, accepts the key and is ready."""
    httpx = _httpx()
    try:
        resp = httpx.get(f"{base_url}/v1/models", headers=_headers(api_key), timeout=10.0)
        health = httpx.get(f"{base_url}/health", timeout=10.0)
    except httpx.HTTPError as e:
        raise BenchmarkError(f"cannot reach the server at {base_url}: {e or type(e).__name__}") from None
    if resp.status_code != 200:
        raise BenchmarkError(f"{base_url}/v1/models answered {_error_message(resp.status_code, resp.content)}")
    if health.status_code == 503:  # maxcli and vLLM answer 503 until the model is loaded; 404: no such route
        raise BenchmarkError(f"the server at {base_url} is not ready yet (/health: {_error_message(503, health.content)})")
    try:
        return [m["id"] for m in resp.json()["data"]]
    except (ValueError, KeyError, TypeError):
        raise BenchmarkError(f"{base_url}/v1/models did not return an OpenAI model list") from None


async def _stream(client: Any, payload: dict[str, Any], rec: RequestRecord) -> Optional[dict[str, Any]]:
    """Read one streamed completion into rec (token arrivals, error); returns the usage chunk's counts."""
    usage: Optional[dict[str, Any]] = None
    async with client.stream("POST", "/v1/completions", json=payload) as resp:
        if resp.status_code != 200:
            rec.error = _error_message(resp.status_code, await resp.aread())
            return None
        async for line in resp.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if "error" in chunk:
                rec.error = _error_message(200, data.encode())
                return None
            if any(c.get("text") for c in chunk.get("choices") or []):
                rec.token_times.append(time.perf_counter())
                rec.token_counts.append(1)
            usage = chunk.get("usage") or usage
    return usage


async def _send(client: Any, model: str, req: BenchRequest, rec: RequestRecord) -> None:
    httpx = _httpx()
    payload = {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.output_len,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    usage: Optional[dict[str, Any]] = None
    rec.sent = time.perf_counter()
    try:
        usage = await _stream(client, payload, rec)
    except (httpx.HTTPError, ValueError) as e:
        rec.error = f"{type(e).__name__}: {e}"
    finally:
        rec.end = time.perf_counter()
    if rec.error is not None:
        return
    if usage is not None:
        rec.prompt_len = int(usage.get("prompt_tokens", rec.prompt_len))
        rec.output_len = int(usage.get("completion_tokens", len(rec.token_times)))
    else:
        rec.output_len = len(rec.token_times)
    if rec.token_counts:  # spread the exact count over the chunks (a chunk may hold several tokens)
        n = len(rec.token_counts)
        rec.token_counts = [rec.output_len // n + (1 if k < rec.output_len % n else 0) for k in range(n)]


async def _run(
    base_url: str, model: str, requests: list[BenchRequest], arrivals: list[float],
    max_concurrency: Optional[int], api_key: Optional[str], timeout_s: float,
) -> tuple[list[RequestRecord], float]:
    httpx = _httpx()
    records = [RequestRecord(prompt_len=r.prompt_len) for r in requests]
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    limits = httpx.Limits(max_connections=max_concurrency or len(requests), max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=base_url, headers=_headers(api_key), limits=limits, timeout=httpx.Timeout(timeout_s, connect=10.0)
    ) as client:
        start = time.perf_counter()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + arrivals[i] - time.perf_counter()))
            async with slots if slots is not None else contextlib.nullcontext():
                await _send(client, model, requests[i], records[i])

        await asyncio.gather(*(one(i) for i in range(len(requests))))
    return records, start


def run_serving(
    base_url: str, model: str, requests: list[BenchRequest], arrivals: list[float],
    max_concurrency: Optional[int], api_key: Optional[str], timeout_s: float = 600.0,
) -> tuple[list[RequestRecord], float]:
    """Send every request; (records in request order, start time). Failures are recorded, not raised."""
    return asyncio.run(_run(base_url, model, requests, arrivals, max_concurrency, api_key, timeout_s))
