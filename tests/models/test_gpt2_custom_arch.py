"""custom_architectures/gpt2: a non-Llama family written the guide's way (a maxcli.nn.Module network and a
plain PipelineModel subclass) loaded through --custom-architectures, checked against transformers on a
tiny random checkpoint: logits of the prefill and of 8 paged decode steps within 1e-4, greedy tokens equal,
multi-step execute equal to single steps, and a context validator's failure reported as one line."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_checkpoints import write_tiny_checkpoint  # noqa: E402

from maxcli.config import PipelineConfig  # noqa: E402
from maxcli.interfaces import InputError, RequestID, SamplingParams, TextGenerationInputs, TextGenerationRequest  # noqa: E402

GPT2_FOLDER = Path(__file__).resolve().parents[2] / "custom_architectures" / "gpt2"
PROMPT = "The quick brown fox jumps over the lazy dog because"


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=3, n_head=4, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        initializer_range=0.2)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"), tokenizer, config, seed=7, model_cls=GPT2LMHeadModel)


@pytest.fixture(scope="module")
def loaded(tiny_gpt2: Path):
    from maxcli.pipelines.lib.entrypoints import load_text_generation

    config = PipelineConfig(model_path=str(tiny_gpt2), custom_architectures=[str(GPT2_FOLDER)],
                            quantization_encoding="float32", max_length=128)
    return load_text_generation(config)


@pytest.fixture(scope="module")
def hf_gpt2(tiny_gpt2: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_gpt2, torch_dtype=torch.float32).eval()


def _context(tokenizer, prompt=PROMPT, max_new_tokens=8):
    request = TextGenerationRequest(RequestID(), prompt=prompt,
                                    sampling_params=SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
    return asyncio.run(tokenizer.new_context(request))


def test_the_plain_pipeline_model_built_the_guide_network(loaded) -> None:
    _, pipeline = loaded
    model = pipeline.pipeline_model
    assert type(model).__name__ == "GPT2Model" and type(model.model).__name__ == "GPT2"
    names = dict(model.model.parameters)
    assert "h.0.attn.c_attn.weight" in names and names["wpe.weight"].shape == (256, 64)
    assert type(model).get_kv_params(model.huggingface_config).n_kv_heads == 4


def test_prefill_and_eight_paged_decode_steps_match_transformers(loaded, hf_gpt2) -> None:
    tokenizer, pipeline = loaded
    model, kv = pipeline.pipeline_model, pipeline.kv_manager
    ctx = _context(tokenizer)
    kv.claim(ctx.request_id)
    try:
        kv.alloc(ctx, num_steps=1)
        inputs = model.prepare_initial_token_inputs([ctx], kv.fetch([ctx]), return_n_logits=-1)
        out = model.execute(inputs)
        with torch.no_grad():
            ref = hf_gpt2(torch.tensor([ctx.tokens])).logits[0]
        torch.testing.assert_close(out.all_logits, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(out.logits[0], ref[-1], atol=1e-4, rtol=0)
        for _ in range(8):
            token = int(out.logits[0].argmax())
            ctx.num_computed_tokens = len(ctx.tokens)
            ctx.append_token(token)
            kv.alloc(ctx, num_steps=1)
            inputs = model.prepare_next_token_inputs(torch.tensor([token]), inputs)
            out = model.execute(inputs)
            with torch.no_grad():
                ref_last = hf_gpt2(torch.tensor([ctx.tokens])).logits[0, -1]
            torch.testing.assert_close(out.logits[0], ref_last, atol=1e-4, rtol=0)
    finally:
        kv.release(ctx.request_id)
    assert kv.num_used_blocks == 0


def test_greedy_tokens_match_transformers_single_and_multi_step(loaded, hf_gpt2) -> None:
    tokenizer, pipeline = loaded
    kv = pipeline.kv_manager
    prompts = [PROMPT, "Once upon a time", "def add(a, b):"]
    for prompt in prompts:
        ids = tokenizer.delegate.encode(prompt)
        with torch.no_grad():
            want = hf_gpt2.generate(torch.tensor([ids]), max_new_tokens=10, min_new_tokens=10, do_sample=False,
                                    pad_token_id=0)[0, len(ids):].tolist()
        for num_steps in (1, 5):  # 5: the seeds' multi-step execute, decode steps through prepare_next_token_inputs
            ctx = _context(tokenizer, prompt, max_new_tokens=10)
            ctx.sampling_params.ignore_eos = True
            kv.claim(ctx.request_id)
            got: list[int] = []
            while not ctx.is_done:
                kv.alloc(ctx, num_steps=num_steps)
                out = pipeline.execute(TextGenerationInputs(batches=[{ctx.request_id: ctx}], num_steps=num_steps))
                got.extend(out[ctx.request_id].tokens)
            kv.release(ctx.request_id)
            assert got == want, (prompt, num_steps)
    assert kv.num_used_blocks == 0


def test_offline_llm_batches_the_custom_architecture(tiny_gpt2: Path, hf_gpt2) -> None:
    from maxcli.engine.llm import LLM

    llm = LLM(model=str(tiny_gpt2), custom_architectures=[str(GPT2_FOLDER)], quantization_encoding="float32",
              max_length=128)
    try:
        prompts = [PROMPT, "Once upon a time", "def add(a, b):", "Paris is"]
        outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=6, ignore_eos=True))
        for prompt, out in zip(prompts, outs):
            ids = llm.tokenizer.delegate.encode(prompt)
            with torch.no_grad():
                want = hf_gpt2.generate(torch.tensor([ids]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                        pad_token_id=0)[0, len(ids):].tolist()
            assert out.token_ids == want
    finally:
        llm.close()


def _folder_with_validator(tmp_path: Path) -> Path:
    """The gpt2 folder plus a context validator that refuses prompts over 40 tokens."""
    folder = tmp_path / "gpt2_validated"
    shutil.copytree(GPT2_FOLDER, folder, ignore=shutil.ignore_patterns("__pycache__"))
    arch = folder / "arch.py"
    text = arch.read_text().replace("from .model import GPT2Model\n", '''from .model import GPT2Model
from maxcli.interfaces import InputError
from maxcli.pipelines.core import TextAndVisionContext, TextContext


def refuse_forbidden(context: TextContext | TextAndVisionContext) -> None:
    if context.num_output_tokens == 0 and len(context.tokens) > 40:
        raise InputError(f"prompt of {len(context.tokens)} tokens: this model takes at most 40")
''')
    text = text.replace("    weight_adapters={", "    context_validators=[refuse_forbidden],\n    weight_adapters={")
    arch.write_text(text)
    return folder


def test_context_validators_run_on_every_new_context(tmp_path: Path, tiny_gpt2: Path) -> None:
    from maxcli.pipelines.lib.entrypoints import load_text_generation

    folder = _folder_with_validator(tmp_path)
    tokenizer, _ = load_text_generation(PipelineConfig(model_path=str(tiny_gpt2), custom_architectures=[str(folder)],
                                                       quantization_encoding="float32", max_length=128))
    assert _context(tokenizer, "short prompt").tokens
    with pytest.raises(InputError, match="takes at most 40"):
        _context(tokenizer, "word " * 60)
    run = subprocess.run([sys.executable, "-m", "maxcli", "generate", "--model", str(tiny_gpt2), "--custom-architectures",
                          str(folder), "--quantization-encoding", "float32", "--prompt", "word " * 60,
                          "--max-new-tokens", "2"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "takes at most 40" in lines[0], run.stderr


def test_supports_empty_batches_steps_the_model_over_no_tokens(tiny_gpt2: Path, loaded) -> None:
    """An architecture that supports empty batches has its forward run for a batch with no live request
    (the pipeline reads the SupportedArchitecture field); one that does not returns at once."""
    import dataclasses

    from maxcli.pipelines import PIPELINE_REGISTRY
    from maxcli.pipelines.lib.factory import build_text_generation_pipeline, resolve_for_architecture
    from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

    _, plain = loaded
    assert plain.supports_empty_batches is False
    arch = dataclasses.replace(PIPELINE_REGISTRY.lookup("GPT2LMHeadModel"), supports_empty_batches=True)
    config = PipelineConfig(model_path=str(tiny_gpt2), quantization_encoding="float32", max_length=64)
    hf = PIPELINE_REGISTRY.get_active_huggingface_config(huggingface_repo_for(config))
    pipeline = build_text_generation_pipeline(resolve_for_architecture(config, arch, hf), arch)
    seen: list[int] = []
    model = pipeline.pipeline_model
    run = model.execute
    model.execute = lambda inputs: (seen.append(inputs.input_ids.numel()), run(inputs))[1]  # observe, then run
    assert pipeline.execute(TextGenerationInputs(batches=[{}])) == {}
    assert seen == [0]
    assert plain.execute(TextGenerationInputs(batches=[{}])) == {}
