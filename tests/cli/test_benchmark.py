"""`maxcli benchmark`: offline on the real SmolLM2 GGUF, serving against a real `maxcli serve` on loopback,
ShareGPT files, --plot, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from cli_errors import assert_one_line_error

from tests.serve.conftest import ServerProcess, free_port

LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms")

SHAREGPT = [
    {"conversations": [{"from": "human", "value": "What is the capital of France?"},
                       {"from": "gpt", "value": "The capital of France is Paris."}]},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Name three colors."},
                       {"from": "gpt", "value": "Red, green and blue."}]},
    {"conversations": [{"from": "human", "value": "A question without an answer"}]},
    {"conversations": [{"from": "human", "value": "Count to five."},
                       {"from": "gpt", "value": "One, two, three, four, five."}], "id": "extra keys are fine"},
]


def maxcli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MAXCLI_API_KEY", None)
    cmd = [sys.executable, "-m", "maxcli", "benchmark", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def check_result(res: dict, prompts: int, input_tokens: int, output_tokens: int) -> None:
    assert res["completed"] == prompts and res["failed"] == 0 and res["errors"] == []
    assert res["total_input_tokens"] == input_tokens and res["total_output_tokens"] == output_tokens
    assert res["duration_s"] > 0
    for key in ("request_throughput", "input_throughput", "output_throughput", "total_token_throughput"):
        assert res[key] > 0, key
    assert res["output_throughput"] == pytest.approx(output_tokens / res["duration_s"], rel=1e-2)
    for key in LATENCIES:
        s = res[key]
        assert 0 < s["p50"] <= s["p90"] <= s["p99"], (key, s)
        assert s["mean"] > 0, (key, s)
    # a request's first token comes before its last, and no request outlasts the benchmark
    assert res["ttft_ms"]["p99"] <= res["e2el_ms"]["p99"] <= res["duration_s"] * 1e3 + 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    """Started here, waited for in the serving tests: its model load overlaps the offline test's."""
    proc = ServerProcess(["--model", str(smollm2_gguf)], tmp_path_factory.mktemp("bench_server") / "server.log")
    try:
        yield proc
    finally:
        proc.terminate()


def test_offline_random_json_plot_and_result_file(tmp_path: Path, smollm2_gguf: Path, server: ServerProcess) -> None:
    png, out = tmp_path / "latency.png", tmp_path / "result.json"
    r = maxcli("--model", str(smollm2_gguf), "--num-prompts", "4", "--input-len", "16", "--output-len", "8",
               "--num-warmups", "1", "--seed", "3", "--json", "--plot", str(png), "--result-file", str(out))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode"] == "offline" and res["dataset"] == "random" and res["seed"] == 3
    assert (res["num_prompts"], res["input_len"], res["output_len"]) == (4, 16, 8)
    check_result(res, prompts=4, input_tokens=4 * 16, output_tokens=4 * 8)
    assert res["load_s"] > 0
    assert json.loads(out.read_text()) == res
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_serving_random_with_rate_and_concurrency(server: ServerProcess, smollm2_gguf: Path) -> None:
    server.wait_ready()
    r = maxcli("--base-url", server.base_url + "/v1", "--model", str(smollm2_gguf), "--num-prompts", "4",
               "--input-len", "8", "--output-len", "4", "--request-rate", "20", "--max-concurrency", "2", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["mode"] == "serving" and res["base_url"] == server.base_url and res["model"] == str(smollm2_gguf)
    assert res["request_rate"] == 20.0 and res["max_concurrency"] == 2
    check_result(res, prompts=4, input_tokens=4 * 8, output_tokens=4 * 4)


def test_serving_sharegpt_table(server: ServerProcess, smollm2_gguf: Path, tmp_path: Path) -> None:
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    data = tmp_path / "sharegpt.json"
    data.write_text(json.dumps(SHAREGPT))
    server.wait_ready()
    # no --model: the served model's id (the server's --model path) names the model and the tokenizer
    out = tmp_path / "r.json"
    r = maxcli("--base-url", server.base_url, "--dataset", str(data), "--num-prompts", "10", "--result-file", str(out))
    assert r.returncode == 0, r.stderr
    assert "time to first token" in r.stdout and "output token throughput" in r.stdout
    res = json.loads(out.read_text())
    tok = TextTokenizer(smollm2_gguf).delegate
    replies = [c["conversations"][-1]["value"] for c in SHAREGPT if c["conversations"][-1]["from"] == "gpt"]
    prompts = [next(t["value"] for t in c["conversations"] if t["from"] == "human") for c in SHAREGPT
               if c["conversations"][-1]["from"] == "gpt"]
    expected_out = sum(len(tok.encode(t, add_special_tokens=False)) for t in replies)
    expected_in = sum(len(tok.encode(t)) for t in prompts)
    assert res["num_prompts"] == 3 and res["dataset"] == str(data)  # the entry without a reply is skipped
    check_result(res, prompts=3, input_tokens=expected_in, output_tokens=expected_out)


def test_bad_inputs_are_one_line_errors(tmp_path: Path, server: ServerProcess, smollm2_gguf: Path) -> None:
    model = ["--model", str(smollm2_gguf)]
    assert_one_line_error(maxcli(*model, "--dataset", str(tmp_path / "nope.json")), "dataset file not found", "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversations": [')
    assert_one_line_error(maxcli(*model, "--dataset", str(bad)), "not valid JSON", "bad.json")
    bad.write_text('{"conversations": []}')
    assert_one_line_error(maxcli(*model, "--dataset", str(bad)), "expected a JSON list")
    bad.write_text('[{"conversations": [{"from": "human", "value": 3}]}]')
    assert_one_line_error(maxcli(*model, "--dataset", str(bad)), "entry 0")
    bad.write_text('[{"conversations": [{"from": "human", "value": "hi"}]}]')
    assert_one_line_error(maxcli("--base-url", "http://127.0.0.1:1", "--dataset", str(bad)), "cannot reach")
    assert_one_line_error(maxcli(*model, "--num-prompts", "0"), "--num-prompts")
    assert_one_line_error(maxcli(*model, "--request-rate", "0"), "--request-rate")
    assert_one_line_error(maxcli(*model, "--dataset", str(bad), "--input-len", "4"), "--input-len")
    assert_one_line_error(maxcli(*model, "--result-file", str(tmp_path / "no" / "r.json")), "does not exist")
    port = free_port()
    assert_one_line_error(maxcli("--base-url", f"http://127.0.0.1:{port}"), "cannot reach", str(port))
    assert_one_line_error(maxcli("--base-url", "ftp://example"), "http://host:port")
    server.wait_ready()
    assert_one_line_error(maxcli("--base-url", server.base_url, "--model", "other-model"), "not 'other-model'")
    # a dataset whose only conversation has no reply gives no request (no --output-len to fall back on)
    assert_one_line_error(maxcli("--base-url", server.base_url, "--dataset", str(bad)), "no usable conversations")
