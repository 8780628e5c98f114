"""Weight loading (fused shards, lazy safetensors WeightData, adapters) and its one-line errors;
KV-cache binding errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from paged_harness import PagedRunner, Sequence, randomize_
from safetensors.torch import save_file

from maxcli.architectures.gemma3 import weight_adapters as gemma3_adapters
from maxcli.architectures.gemma3.model import Gemma3ForCausalLM
from maxcli.architectures.llama3 import weight_adapters as llama_adapters
from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape
from maxcli.nn import PagedAttention, bind_kv_caches
from maxcli.weights.safetensors_io import read_safetensors

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=32)


def hf_llama() -> tuple[transformers.PreTrainedModel, transformers.LlamaConfig]:
    config = transformers.LlamaConfig(**SMALL)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config)
    randomize_(hf, 0)
    return hf, config


def logits_of(model: torch.nn.Module, config: transformers.PretrainedConfig) -> torch.Tensor:
    return PagedRunner(model, kv_cache_shape(config)).step([Sequence()], [[3, 1, 4, 1, 5, 9]])[0]


def test_lazy_safetensors_weights_load_like_tensors(tmp_path: Path) -> None:
    hf, config = hf_llama()
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    state["model.rotary_emb.inv_freq"] = torch.ones(4)  # older checkpoints stored the rope buffer
    save_file(state, tmp_path / "model.safetensors")
    lazy = llama_adapters.convert_safetensor_state_dict(read_safetensors(tmp_path / "model.safetensors"), config)
    from_file, from_tensors = LlamaForCausalLM(config), LlamaForCausalLM(config)
    from_file.load_weights(lazy)
    from_tensors.load_weights(hf.state_dict())
    qkv = from_file.model.layers[1].self_attn.qkv_proj.weight
    sd = hf.state_dict()
    torch.testing.assert_close(qkv, torch.cat([sd[f"model.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"]))
    torch.testing.assert_close(logits_of(from_file, config), logits_of(from_tensors, config), rtol=0, atol=0)


def test_gemma3_multimodal_prefixes_map_to_text_names() -> None:
    config = transformers.Gemma3TextConfig(**SMALL, head_dim=8, sliding_window=4)
    hf = transformers.AutoModelForCausalLM.from_config(config)
    state = {"language_model." + k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    state["vision_tower.encoder.weight"] = torch.zeros(2)
    Gemma3ForCausalLM(config).load_weights(gemma3_adapters.convert_safetensor_state_dict(state, config))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop("model.norm.weight"), r"^missing weights: model\.norm\.weight$"),
        (lambda s: s.pop("model.layers.0.self_attn.k_proj.weight"),
         r"missing weights: model\.layers\.0\.self_attn\.qkv_proj\.weight \(shards \['k'\]\)"),
        (lambda s: s.update({"model.layers.0.extra.weight": torch.zeros(1)}), "unexpected weight 'model.layers.0.extra"),
        (lambda s: s.update({"model.norm.weight": torch.zeros(31)}), r"'model\.norm\.weight' has shape \(31,\), expected \(32,\)"),
        (lambda s: s.update({"model.layers.0.mlp.up_proj.weight": torch.zeros(64, 31)}), r"shard 1 has shape \(64, 31\)"),
        (lambda s: s.update({"lm_head.weight": [1.0]}), "'lm_head.weight' is a list, expected a tensor or WeightData"),
    ],
)
def test_bad_checkpoints_raise_one_line_value_errors(edit, message: str) -> None:
    hf, config = hf_llama()
    state = dict(hf.state_dict())
    edit(state)
    with pytest.raises(ValueError, match=message) as info:
        LlamaForCausalLM(config).load_weights(state)
    assert "\n" not in str(info.value)


def test_bind_kv_caches_checks_count_and_shape() -> None:
    _, config = hf_llama()
    model = LlamaForCausalLM(config)
    layers, hk, d = kv_cache_shape(config)
    good = torch.zeros(4, 2, hk, d)
    with pytest.raises(ValueError, match="got 1 KV cache pairs for 2 attention layers"):
        bind_kv_caches(model, [(good, good)])
    with pytest.raises(ValueError, match=r"layer 1 v cache has shape \(4, 2, 2, 4\)"):
        bind_kv_caches(model, [(good, good), (good, torch.zeros(4, 2, 2, 4))])
    bind_kv_caches(model, [(good, good)] * layers)
    assert model.model.layers[1].self_attn.attn.k_cache is good


def test_attention_without_bound_cache_says_so() -> None:
    attn = PagedAttention(2, 1, 4, 0.5)
    with pytest.raises(RuntimeError, match="KV cache not bound"):
        attn(torch.zeros(1, 2, 4), torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))
