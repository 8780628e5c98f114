"""The guide's own words, served: examples/seeds/guide_serve.sh runs `maxcli serve --custom-architectures
./my_model` over the guide's my_model folder (arch.py and __init__.py verbatim), and
custom_architectures/gpt2 (a GPT-2 written the guide's way) is served with --custom-architectures; both
answer the real openai client, GPT-2's greedy tokens equal transformers'."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import openai
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_checkpoints import write_tiny_checkpoint, write_tiny_llama  # noqa: E402

from tests.serve.conftest import REPO_ROOT, ServerProcess, free_port, start_server  # noqa: E402

SEEDS = REPO_ROOT / "examples" / "seeds"
GPT2_FOLDER = REPO_ROOT / "custom_architectures" / "gpt2"


@pytest.fixture(scope="module")
def guide_checkpoint(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A tiny random MyModelForCausalLM checkpoint in bfloat16, the one encoding the guide's arch.py lists."""
    import json

    from safetensors.torch import load_file, save_file

    folder = write_tiny_llama(tmp_path_factory.mktemp("guide_my_model"), smollm2_gguf,
                              architectures=["MyModelForCausalLM"], torch_dtype="bfloat16")
    weights = folder / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["MyModelForCausalLM"]
    return folder


class ScriptServer(ServerProcess):
    """guide_serve.sh from examples/seeds (so ./my_model is the guide's folder), with a port appended."""

    def __init__(self, checkpoint: Path, log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = None
        self.log_path = log_path
        self.health_codes = []
        env = {k: v for k, v in os.environ.items() if k != "MAXCLI_API_KEY"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(["bash", "guide_serve.sh", str(checkpoint), "--port", str(self.port),
                                      "--served-model-name", "my-model"], cwd=SEEDS, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return super().terminate(timeout)


def test_guide_my_model_folder_served_by_the_guide_command(tmp_path_factory, guide_checkpoint: Path) -> None:
    server = ScriptServer(guide_checkpoint, tmp_path_factory.mktemp("guide_serve") / "server.log")
    try:
        server.wait_ready()
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
        reply = client.chat.completions.create(model="my-model", messages=[{"role": "user", "content": "Hello!"}],
                                               max_tokens=5, temperature=0)
        assert reply.choices[0].finish_reason in ("stop", "length") and 1 <= reply.usage.completion_tokens <= 5
        # only ./my_model registers MyModelForCausalLM (the name the checkpoint's config.json gives)
        assert "encoding bfloat16" in server.log()
    finally:
        server.terminate()


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, initializer_range=0.2)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve-gpt2"), tokenizer, config, seed=11, model_cls=GPT2LMHeadModel)


@pytest.fixture(scope="module")
def gpt2_server(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path) -> Iterator[ServerProcess]:
    args = ["--model", str(tiny_gpt2), "--custom-architectures", str(GPT2_FOLDER), "--served-model-name", "gpt2"]
    yield from start_server(tmp_path_factory, "gpt2_serve", args)


def test_gpt2_custom_architecture_served(gpt2_server: ServerProcess, tiny_gpt2: Path) -> None:
    from transformers import AutoTokenizer, GPT2LMHeadModel

    client = openai.OpenAI(base_url=f"{gpt2_server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    chat = client.chat.completions.create(model="gpt2", messages=[{"role": "user", "content": "Hi there"}],
                                          max_tokens=4, temperature=0)
    assert 1 <= chat.usage.completion_tokens <= 4
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2)
    hf = GPT2LMHeadModel.from_pretrained(tiny_gpt2, torch_dtype=torch.float32).eval()
    for prompt in ("The quick brown fox", "Once upon a time there"):
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            want = hf.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False,
                               pad_token_id=0)[0, len(ids):].tolist()
        reply = client.completions.create(model="gpt2", prompt=ids, max_tokens=8, temperature=0, logprobs=0,
                                          extra_body={"ignore_eos": True})
        assert reply.choices[0].logprobs.tokens == [tokenizer.decode([t]) for t in want], prompt
    assert gpt2_server.wait_metric("maxcli_kv_cache_used_pages", 0) == 0
