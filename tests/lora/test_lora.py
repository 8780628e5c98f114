"""LoRA adapters made with peft (random non-zero B, several ranks and target sets) on tiny random models
of two architectures: greedy tokens equal transformers + peft on the float32 path; one batch mixing three
adapters and the base gives each request its solo tokens with prefix caching on; adapters beyond
max_num_loras load on demand and evict the least recently used; bad adapters are one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tiny_checkpoints import write_tiny_checkpoint, write_tiny_llama  # noqa: E402

from maxcli.config import ConfigError  # noqa: E402
from maxcli.interfaces import InputError, SamplingParams  # noqa: E402

PROMPTS = ["The quick brown fox", "Once upon a time there was"]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True)
ADAPTERS = {  # name -> (rank, alpha, targets, rslora)
    "attn": (4, 8, ["q_proj", "k_proj", "v_proj", "o_proj"], False),
    "mlp": (8, 16, ["gate_proj", "up_proj", "down_proj"], False),
    "mixed": (2, 4, ["q_proj", "v_proj", "up_proj", "down_proj"], True),
}


def _qwen2_checkpoint(folder: Path, smollm2_gguf: Path) -> Path:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, initializer_range=0.1, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    return write_tiny_checkpoint(folder, tokenizer, config, seed=4, model_cls=Qwen2ForCausalLM)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def family(request, tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path):
    """(base folder, {adapter name: folder}, transformers base model) for one architecture."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp(f"lora-{request.param}")
    base = write_tiny_llama(root / "base", smollm2_gguf) if request.param == "llama" else _qwen2_checkpoint(root / "base", smollm2_gguf)
    folders = {}
    for i, (name, (rank, alpha, targets, rslora)) in enumerate(ADAPTERS.items()):
        torch.manual_seed(10 + i)
        model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets,
                                                      use_rslora=rslora, init_lora_weights=False))
        peft_model.save_pretrained(root / name)
        folders[name] = root / name
    return base, folders


def _reference(base: Path, adapter: Path | None, prompt_ids: list[int]) -> list[int]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def _llm(base: Path, folders: dict[str, Path], **kw):
    from maxcli.engine.llm import LLM

    return LLM(model=str(base), quantization_encoding="float32", enable_lora=True,
               lora_paths=[f"{n}={p}" for n, p in folders.items()], **kw)


def test_greedy_tokens_equal_transformers_with_peft(family) -> None:
    base, folders = family
    llm = _llm(base, folders)
    try:
        ids = [llm.tokenizer.delegate.encode(p) for p in PROMPTS]
        for name, folder in folders.items():
            outs = llm.generate(ids, GREEDY, lora=name)
            for prompt_ids, out in zip(ids, outs):
                assert out.token_ids == _reference(base, folder, prompt_ids), name
        assert [o.token_ids for o in llm.generate(ids, GREEDY)] == [_reference(base, None, i) for i in ids]
    finally:
        llm.close()


def test_one_batch_of_three_adapters_and_the_base_matches_solo_runs(family) -> None:
    """Same prompt for every row: with prefix caching on, pages must not be shared across adapters."""
    base, folders = family
    llm = _llm(base, folders, enable_prefix_caching=True)
    try:
        ids = llm.tokenizer.delegate.encode(PROMPTS[1] + " a long shared opening so that full pages are cached")
        names = [*folders, None]
        solo = {n: llm.generate([ids], GREEDY, lora=n)[0].token_ids for n in names}
        mixed = llm.generate([ids] * len(names) * 2, GREEDY, lora=names * 2)
        assert [o.token_ids for o in mixed] == [solo[n] for n in names * 2]
        assert len({tuple(t) for t in solo.values()}) == len(names)  # every adapter changes the output
        kv = llm.engine.pipeline.kv_manager
        assert kv.num_used_blocks == 0
    finally:
        llm.close()


def test_adapters_beyond_the_slots_load_on_demand(family) -> None:
    base, folders = family
    llm = _llm(base, folders, max_num_loras=2)
    try:
        ids = llm.tokenizer.delegate.encode(PROMPTS[0])
        lora = llm.engine.lora
        assert len(lora.resident) == 2 and lora.names() == list(folders)
        want = {n: _reference(base, f, ids) for n, f in folders.items()}
        for name in [*folders, *folders]:
            assert llm.generate([ids], GREEDY, lora=name)[0].token_ids == want[name]
        assert lora.evictions >= 3 and lora.loads >= 5 and len(lora.resident) == 2
        # three adapters in one call with two slots: the scheduler holds one back until a slot frees
        outs = llm.generate([ids] * 3, GREEDY, lora=list(folders))
        assert [o.token_ids for o in outs] == [want[n] for n in folders]
    finally:
        llm.close()


def test_bad_adapters_are_one_line_errors(family, tmp_path: Path) -> None:
    import json
    import shutil

    base, folders = family
    with pytest.raises(ConfigError, match="rank 8 exceeds max_lora_rank 4") as e:
        _llm(base, {"mlp": folders["mlp"]}, max_lora_rank=4)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="no adapter_config.json"):
        _llm(base, {"x": tmp_path})
    broken = tmp_path / "broken"
    shutil.copytree(folders["attn"], broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ConfigError, match="use_dora=True is not supported"):
        _llm(base, {"x": broken})
    llm = _llm(base, {"attn": folders["attn"]})
    try:
        with pytest.raises(InputError, match="unknown LoRA adapter 'nope'"):
            llm.generate(["hi"], GREEDY, lora="nope")
    finally:
        llm.close()


def test_an_adapter_for_another_base_model_is_refused(tmp_path_factory, smollm2_gguf: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("lora-mismatch")
    small = write_tiny_llama(root / "small", smollm2_gguf)
    wide = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    peft_model = get_peft_model(wide, LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(root / "wide-adapter")
    with pytest.raises(ConfigError, match="an adapter for another base model"):
        _llm(small, {"w": root / "wide-adapter"})
    lm_head = get_peft_model(AutoModelForCausalLM.from_pretrained(small), LoraConfig(r=2, target_modules=["lm_head"]))
    lm_head.save_pretrained(root / "head-adapter")
    with pytest.raises(ConfigError, match="lm_head.* not a (LoRA A/B pair of a projection|projection)"):
        _llm(small, {"h": root / "head-adapter"})


def test_generate_cli_runs_an_adapter(family) -> None:
    """`maxcli generate --enable-lora --lora-paths a=PATH --lora a` prints the adapter's tokens; an
    unknown --lora is one line and a non-zero exit."""
    import json
    import subprocess

    base, folders = family
    ids_run = [sys.executable, "-m", "maxcli", "generate", "--model", str(base), "--quantization-encoding", "float32",
               "--enable-lora", "--lora-paths", f"attn={folders['attn']}", "--prompt", PROMPTS[0], "--no-chat-template",
               "--max-new-tokens", "8", "--ignore-eos", "--json"]
    run = subprocess.run([*ids_run, "--lora", "attn"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])["token_ids"]
    from transformers import AutoTokenizer

    prompt_ids = AutoTokenizer.from_pretrained(base)(PROMPTS[0])["input_ids"]
    assert got == _reference(base, folders["attn"], prompt_ids)
    bad = subprocess.run([*ids_run, "--lora", "nope"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and len(lines) == 1 and "unknown LoRA adapter 'nope'" in lines[0], bad.stderr


def test_smollm2_folder_with_an_adapter_equals_transformers(tmp_path_factory, smollm2_gguf: Path) -> None:
    """The real SmolLM2 weights (an HF folder written from the GGUF by transformers) with a peft adapter."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("lora-smollm2")
    loaded = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None  # a plain float32 folder, as a user converts it
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(root / "base")
    AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name).save_pretrained(root / "base")
    torch.manual_seed(5)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                                                  init_lora_weights=False))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.mul_(0.05)  # a noticeable but not overwhelming change, as a trained adapter makes
    peft_model.save_pretrained(root / "adapter")
    llm = _llm(root / "base", {"tuned": root / "adapter"}, max_length=128)
    try:
        for prompt in PROMPTS:
            ids = llm.tokenizer.delegate.encode(prompt)
            with torch.no_grad():
                want = peft_model.generate(torch.tensor([ids]), max_new_tokens=8, min_new_tokens=8, do_sample=False,
                                           pad_token_id=0)[0, len(ids):].tolist()
            assert llm.generate([ids], GREEDY, lora="tuned")[0].token_ids == want, prompt
    finally:
        llm.close()
    # The common case: the GGUF base stays in its blocks (int8 activations), the adapter runs in float
    # beside it. Teacher forcing on real text against transformers+peft in float32: top-1 agreement.
    from maxcli.engine.llm import LLM

    text = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg "
            "combined movable metal type, oil-based ink and a screw press adapted from wine making. Within "
            "fifty years presses were running in more than two hundred cities across Europe, and the price "
            "of books fell so far that reading spread well beyond the clergy and the nobility.")
    quantized = LLM(model=str(smollm2_gguf), max_length=256, enable_lora=True, lora_paths=[f"tuned={root / 'adapter'}"])
    try:
        ids = quantized.tokenizer.delegate.encode(text)
        echo = SamplingParams(temperature=0.0, max_new_tokens=1, echo=True, logprobs=1)
        ours = [max(top, key=top.get) for top in
                quantized.generate([ids], echo, lora="tuned")[0].prompt_logprobs.top_log_probabilities]
        base = [max(top, key=top.get) for top in
                quantized.generate([ids], echo)[0].prompt_logprobs.top_log_probabilities]
    finally:
        quantized.close()
    with torch.no_grad():
        ref = peft_model(torch.tensor([ids])).logits[0, :-1].argmax(-1).tolist()
    agree = sum(a == b for a, b in zip(ours, ref)) / len(ref)
    print(f"quantized base + adapter vs transformers+peft: top-1 agreement {agree:.3f} over {len(ref)} tokens")
    assert len(ours) == len(ref) > 60 and agree >= 0.9, agree
    assert ours != base  # the adapter is applied on the quantized path


def test_lora_combinations_maxcli_cannot_serve_are_one_line() -> None:
    from maxcli.config import PipelineConfig

    for extra in ({"tensor_parallel_size": 2}, {"engine": "huggingface"}):
        with pytest.raises(ConfigError) as e:
            PipelineConfig(enable_lora=True, **extra).validate_lora_compatibility()
        assert "enable_lora" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="lora_paths needs enable_lora"):
        PipelineConfig.from_sources({"lora_paths": ["a=/x"]})
    with pytest.raises(ConfigError, match="NAME=PATH"):
        PipelineConfig.from_sources({"enable_lora": True, "lora_paths": ["/x"]})
    PipelineConfig(enable_lora=True).validate_lora_compatibility()


def test_an_adapter_from_a_hub_repo(family, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lora_paths may name a hub repo: fetched through huggingface_hub (a local fake hub here)."""
    from hub_server import FakeHub, point_hub_at

    base, folders = family
    fake = FakeHub()
    fake.add_repo("acme/attn-lora", {p.name: p.read_bytes() for p in folders["attn"].iterdir() if p.is_file()})
    running = fake.start()
    point_hub_at(monkeypatch, running.url, tmp_path / "hf-cache")
    try:
        llm = _llm(base, {"hub": "acme/attn-lora", "local": folders["attn"]})
        try:
            ids = llm.tokenizer.delegate.encode(PROMPTS[0])
            hub_out, local_out = llm.generate([ids, ids], GREEDY, lora=["hub", "local"])
            assert hub_out.token_ids == local_out.token_ids == _reference(base, folders["attn"], ids)
        finally:
            llm.close()
        with pytest.raises(ConfigError, match="adapter missing: cannot fetch acme/none"):
            _llm(base, {"missing": "acme/none"})
    finally:
        running.stop()
