"""LoRA adapters behind the real server, with the real openai client: the adapter is chosen by `model`,
/v1/models lists it with its parent, adapters load and unload at run time (an unload waits for the
requests in flight), an unknown adapter is a 404, a bad folder a 400 naming the problem, and no KV page
is left behind."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_checkpoints import write_tiny_llama  # noqa: E402

from tests.serve.conftest import ServerProcess, start_server  # noqa: E402

BASE = "tiny-base"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> tuple[Path, dict[str, Path]]:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lora-serve")
    base = write_tiny_llama(root / "base", smollm2_gguf)
    folders = {}
    for i, (name, targets) in enumerate((("alpha", ["q_proj", "v_proj"]), ("beta", ["gate_proj", "down_proj"]))):
        torch.manual_seed(20 + i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32),
                               LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
        model.save_pretrained(root / name)
        folders[name] = root / name
    return base, folders


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, adapters) -> Iterator[ServerProcess]:
    base, folders = adapters
    args = ["--model", str(base), "--served-model-name", BASE, "--quantization-encoding", "float32", "--enable-lora",
            "--lora-paths", f"alpha={folders['alpha']}", "--max-num-loras", "2", "--api-key", "sekrit"]
    yield from start_server(tmp_path_factory, "lora_serve", args, api_key="sekrit")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sekrit", max_retries=0, timeout=60)


def _expected(base: Path, adapter: Path | None, ids: list[int], n: int = 6) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=0)[0, len(ids):].tolist()


def _tokens(client: openai.OpenAI, model: str, ids: list[int], n: int = 6) -> list[str]:
    reply = client.completions.create(model=model, prompt=ids, max_tokens=n, temperature=0, logprobs=0,
                                      extra_body={"ignore_eos": True})
    return reply.choices[0].logprobs.tokens


def _post(server: ServerProcess, path: str, body: dict, key: str | None = "sekrit") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=120)


def test_models_list_the_base_and_its_adapters(client: openai.OpenAI) -> None:
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {BASE, "alpha"} and cards["alpha"].parent == BASE
    assert client.models.retrieve("alpha").parent == BASE


def test_the_adapter_is_picked_by_model_name(client: openai.OpenAI, adapters) -> None:
    from transformers import AutoTokenizer

    base, folders = adapters
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer("The quick brown fox")["input_ids"]
    for model, folder in ((BASE, None), ("alpha", folders["alpha"])):
        assert _tokens(client, model, ids) == [tokenizer.decode([t]) for t in _expected(base, folder, ids)], model
    chat = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "Hi"}], max_tokens=3,
                                          temperature=0)
    assert chat.model == "alpha" and chat.usage.completion_tokens >= 1
    with pytest.raises(openai.NotFoundError, match="'nope' does not exist"):
        client.completions.create(model="nope", prompt="hi", max_tokens=2)


def test_load_use_and_unload_at_run_time(client: openai.OpenAI, server: ServerProcess, adapters, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    base, folders = adapters
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids = tokenizer("Once upon a time")["input_ids"]
    assert _post(server, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(folders["beta"])}, key=None).status_code == 401
    r = _post(server, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(folders["beta"])})
    assert r.status_code == 200 and "beta" in r.text
    assert _tokens(client, "beta", ids) == [tokenizer.decode([t]) for t in _expected(base, folders["beta"], ids)]
    again = _post(server, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(folders["beta"])})
    assert again.status_code == 400 and "already loaded" in again.json()["error"]["message"]
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 64, "target_modules": ["q_proj"]}))
    bad = _post(server, "/v1/load_lora_adapter", {"lora_name": "big", "lora_path": str(tmp_path)})
    assert bad.status_code == 400 and "rank 64 exceeds max_lora_rank 16" in bad.json()["error"]["message"]
    missing = _post(server, "/v1/load_lora_adapter", {"lora_name": "gone", "lora_path": str(tmp_path / "none")})
    assert missing.status_code == 400 and "no such folder" in missing.json()["error"]["message"]
    assert _post(server, "/v1/unload_lora_adapter", {"lora_name": "beta"}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="beta", prompt="hi", max_tokens=2)
    assert _post(server, "/v1/unload_lora_adapter", {"lora_name": "beta"}).status_code == 404


def test_unloading_waits_for_requests_in_flight(client: openai.OpenAI, server: ServerProcess, adapters) -> None:
    base, folders = adapters
    assert _post(server, "/v1/load_lora_adapter", {"lora_name": "beta", "lora_path": str(folders["beta"])}).status_code == 200
    stream = client.completions.create(model="beta", prompt="Tell me a story", max_tokens=48, temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    chunks = iter(stream)
    first = next(chunks)
    done = threading.Event()
    result: dict[str, httpx.Response] = {}
    threading.Thread(target=lambda: (result.update(r=_post(server, "/v1/unload_lora_adapter", {"lora_name": "beta"})),
                                     done.set()), daemon=True).start()
    assert done.wait(30) and result["r"].status_code == 200
    rest = list(chunks)
    assert first.model == "beta" and rest[-1].choices[0].finish_reason == "length"
    assert sum(len(c.choices[0].text) > 0 for c in [first, *rest]) >= 10  # the request ran to its end
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="beta", prompt="hi", max_tokens=2)


def test_metrics_and_no_leaked_pages(server: ServerProcess) -> None:
    text = server.metric_text()
    assert 'maxcli_lora_requests_total{adapter="alpha",replica="0"}' in text
    assert server.metric("maxcli_lora_resident_adapters") >= 1 and server.metric("maxcli_lora_loads_total") >= 2
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0) == 0
