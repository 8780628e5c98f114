"""GGUF reading: HF-named tensors equal transformers' own GGUF loading; config; errors."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFWriter

from maxcli.pipelines import PIPELINE_REGISTRY
from maxcli.weights import GGUFFile, WeightsError, load_weights
from maxcli.weights.gguf_names import unpermute_rows

sys.path.insert(0, str(Path(__file__).parent))
from gguf_factory import write_tiny_gguf  # noqa: E402


def gguf_to_hf_names(tensors, cfg):
    """The GGUF weights as the architecture's own adapter renames them (its folder's weight_adapters)."""
    arch = PIPELINE_REGISTRY.lookup(cfg["architectures"][0])
    return arch.weight_adapters["gguf"](tensors, cfg)


def test_smollm2_hf_names_equal_transformers_state_dict(smollm2_gguf: Path) -> None:
    from transformers import AutoModelForCausalLM

    gguf = GGUFFile(smollm2_gguf)
    ours = gguf_to_hf_names(gguf.tensors, gguf.hf_config())
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32)
    reference = model.state_dict()
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert torch.equal(ours[name].to_tensor(), tensor), name


def test_smollm2_config_and_metadata(smollm2_gguf: Path) -> None:
    gguf = GGUFFile(smollm2_gguf)
    cfg = gguf.hf_config()
    assert gguf.architecture == "llama"
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]) == (576, 30, 9)
    assert (cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]) == (3, 64, 49152)
    assert cfg["tie_word_embeddings"] is True and cfg["rope_theta"] == 100000.0
    assert cfg["bos_token_id"] == 1 and cfg["eos_token_id"] == 2 and cfg["rope_scaling"] is None
    assert isinstance(gguf.metadata["tokenizer.chat_template"], str)
    assert gguf.metadata["llama.block_count"] == 30
    w = gguf.tensors["blk.0.ffn_down.weight"]
    assert w.shape == (576, 1536) and w.raw_blocks().shape == (576, 1536 // 32 * 20)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_tiny_architectures_match_transformers_gguf_loader(tmp_path: Path, arch: str) -> None:
    """transformers' load_gguf_checkpoint into a model built from our config: same tensors, all keys."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    path = write_tiny_gguf(tmp_path / f"{arch}.gguf", arch, tied=arch in ("qwen3", "gemma3"))
    gguf = GGUFFile(path)
    cfg = gguf.hf_config()
    ours = gguf_to_hf_names(gguf.tensors, cfg)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))
    reference = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)["tensors"]
    for name, tensor in reference.items():
        assert torch.equal(ours[name].to_tensor(), tensor), name
    model.load_state_dict({k: v.to_tensor() for k, v in ours.items()}, strict=True)
    if cfg["tie_word_embeddings"]:
        assert torch.equal(ours["lm_head.weight"].to_tensor(), ours["model.embed_tokens.weight"].to_tensor())


def test_mistral_detected_from_llama_file(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "m.gguf", "llama", extra_kv={"llama.attention.sliding_window": 4096})
    cfg = GGUFFile(path).hf_config()
    assert cfg["architectures"] == ["MistralForCausalLM"] and cfg["sliding_window"] == 4096


def test_yarn_rope_scaling_from_metadata(tmp_path: Path) -> None:
    kv = {"qwen2.rope.scaling.type": "yarn", "qwen2.rope.scaling.factor": 4.0,
          "qwen2.rope.scaling.original_context_length": 32768}
    cfg = GGUFFile(write_tiny_gguf(tmp_path / "q.gguf", "qwen2", extra_kv=kv)).hf_config()
    assert cfg["rope_scaling"] == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def test_llama3_rope_scaling_recovered_from_rope_freqs(tmp_path: Path) -> None:
    """llama.cpp stores Llama-3 scaling as per-frequency divisors; the HF parameters come back."""
    base, dim, factor, low, high, orig = 500000.0, 128, 8.0, 1.0, 4.0, 8192
    divisors = []
    for i in range(dim // 2):
        wavelen = 2 * math.pi * base ** (2 * i / dim)
        if wavelen < orig / high:
            divisors.append(1.0)
        elif wavelen > orig / low:
            divisors.append(factor)
        else:
            smooth = (orig / wavelen - low) / (high - low)
            divisors.append(1 / ((1 - smooth) / factor + smooth))
    writer = GGUFWriter(str(tmp_path / "l3.gguf"), "llama")
    for key, value in (("llama.embedding_length", 64), ("llama.block_count", 1), ("llama.attention.head_count", 4),
                       ("llama.vocab_size", 32)):
        writer.add_uint32(key, value)
    writer.add_float32("llama.rope.freq_base", base)
    writer.add_tensor("rope_freqs.weight", np.array(divisors, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    scaling = GGUFFile(tmp_path / "l3.gguf").hf_config()["rope_scaling"]
    assert scaling == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                       "original_max_position_embeddings": 8192}


def test_permuted_raw_blocks_agree_with_permuted_values(smollm2_gguf: Path) -> None:
    w = GGUFFile(smollm2_gguf).tensors["blk.0.attn_k.weight"]
    perm = unpermute_rows(w.shape[0], 3)
    p = w.permute_rows(perm)
    assert torch.equal(p.to_tensor(), w.to_tensor()[perm])
    assert torch.equal(p.raw_blocks(), w.raw_blocks()[perm])
    assert torch.equal(p.permute_rows(torch.argsort(perm)).to_tensor(), w.to_tensor())
    with pytest.raises(ValueError, match="not a permutation"):
        w.permute_rows(torch.zeros(w.shape[0], dtype=torch.long))


def test_truncated_gguf_is_a_one_line_weights_error(smollm2_gguf: Path, tmp_path: Path) -> None:
    data = smollm2_gguf.read_bytes()
    for cut in (len(data) - 1000, 3_000_000, 40):
        bad = tmp_path / f"cut{cut}.gguf"
        bad.write_bytes(data[:cut])
        with pytest.raises(WeightsError) as info:
            GGUFFile(bad)
        assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_missing_and_garbage_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        GGUFFile(tmp_path / "nope.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(WeightsError, match="junk.gguf"):
        load_weights([junk])
    with pytest.raises(WeightsError, match="unsupported weight file"):
        load_weights([tmp_path / "model.bin"])


def test_unsupported_architecture_is_clear(tmp_path: Path) -> None:
    writer = GGUFWriter(str(tmp_path / "b.gguf"), "bert")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(WeightsError, match="'bert' is not supported"):
        GGUFFile(tmp_path / "b.gguf").hf_config()


def test_forced_rope_type_decides_the_qk_row_order(smollm2_gguf: Path) -> None:
    """rope_type only matters for GGUF weights: "normal" files (llama.cpp's interleaved rotary pairs) get
    their Q/K rows un-permuted; forcing "neox" on such a file keeps the file's order."""
    from maxcli.config import PipelineConfig

    gguf = GGUFFile(smollm2_gguf)
    cfg = gguf.hf_config()
    adapter = PIPELINE_REGISTRY.lookup("LlamaForCausalLM").weight_adapters["gguf"]
    default = adapter(gguf.tensors, cfg, PipelineConfig())
    forced = adapter(gguf.tensors, cfg, PipelineConfig(rope_type="neox"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(default[name].to_tensor(), forced[name].to_tensor())
    assert torch.equal(forced[name].to_tensor(), gguf.tensors["blk.0.attn_q.weight"].to_tensor())
    assert torch.equal(default["model.layers.0.mlp.up_proj.weight"].to_tensor(),
                       forced["model.layers.0.mlp.up_proj.weight"].to_tensor())
    perm = unpermute_rows(576, 9)
    assert torch.equal(default[name].to_tensor(), forced[name].to_tensor()[perm])
