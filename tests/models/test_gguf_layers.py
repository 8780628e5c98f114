"""The GGUF-native swap (maxcli.nn.gguf_linear) and the fused decode step (maxcli.nn.fused_decode) on every
native architecture's tiny random model: projections and embeddings quantized to GGUF blocks (a fused qkv
mixing three types), then

- the swapped module against the same module loaded with the dequantized blocks in float32 (the only
  difference left is the kernels' activation rounding): prefill (dense path), short chunks (int8 path)
  and decode steps through the paged cache;
- the fused decode step (one sequence, and two at once) against the swapped module's Python path, also
  with LoRA adapters on its projections (maxcli.nn.lora), rows of two adapters and the base in one step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize
from torch import nn

from maxcli.nn.attention_metadata import get_attention_metadata
from maxcli.nn.fused_decode import fused_decode_step
from maxcli.architectures.llama3.model import LlamaForCausalLM
from maxcli.nn.gguf_linear import GGUFEmbedding, GGUFLinear, swap_gguf_layers
from maxcli.nn.lora import LoRALinear, current_rows, install_lora_layers, lora_rows
from maxcli.weights import WeightData
from paged_harness import PagedRunner, Sequence
from test_native_architectures import CASES, VOCAB, build_pair

TYPES = {"q_proj": Q.Q8_0, "k_proj": Q.Q5_0, "v_proj": Q.Q4_1, "o_proj": Q.Q5_1, "qkv_proj": Q.Q8_0,
         "gate_proj": Q.Q4_0, "up_proj": Q.Q8_0, "gate_up_proj": Q.Q5_0, "down_proj": Q.Q8_0, "embed_tokens": Q.Q8_0,
         "lm_head": Q.Q8_0}


pytestmark = pytest.mark.usefixtures("cpu_kernels")


def gguf_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, object], dict[str, torch.Tensor]]:
    """(lazy GGUF WeightData for every projection and embedding, the same values dequantized)."""
    lazy, dequantized = {}, {}
    for name, tensor in state.items():
        kind = name.split(".")[-2]
        if tensor.dim() != 2 or kind not in TYPES:
            lazy[name] = dequantized[name] = tensor
            continue
        qtype = TYPES[kind]
        raw = quantize(tensor.float().numpy(), qtype)
        rows = torch.from_numpy(raw.reshape(tensor.shape[0], -1).copy())
        lazy[name] = WeightData(name, tuple(tensor.shape), qtype, rows.numel(), lambda rows=rows: rows)
        dequantized[name] = torch.from_numpy(dequantize(raw, qtype).reshape(tensor.shape).astype(np.float32))
    return lazy, dequantized


def swapped_pair(name: str) -> tuple[nn.Module, nn.Module, object]:
    ours, hf, config = build_pair(CASES[name])
    lazy, dequantized = gguf_state(hf.state_dict())
    reference = CASES[name].ours(config)
    reference.load_weights(dequantized)
    swapped = CASES[name].ours(config)
    rest = swap_gguf_layers(swapped, lazy, swapped.stacked_params, swapped.ignored_weights)
    swapped.load_weights(rest)
    return swapped.eval(), reference.eval(), config


class FusedDecoding(nn.Module):
    """The module with single-token steps routed through its fused decode step."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner, self.step = module, fused_decode_step(module)
        assert self.step is not None
        self.calls = 0

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if get_attention_metadata().max_seqlen_q == 1:
            out = self.step(input_ids, positions, current_rows())
            assert out is not None
            self.calls += 1
            return out
        return self.inner(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inner.compute_logits(hidden)


def assert_close_logits(got: torch.Tensor, want: torch.Tensor, rel: float, what: str) -> None:
    scale = want.abs().max().item()
    assert scale > 0.5
    err = (got - want).abs().max().item()
    assert err <= rel * scale, f"{what}: max error {err:.4g} vs logit scale {scale:.3g}"


@pytest.mark.parametrize("name", list(CASES))
def test_swapped_layers_track_the_dequantized_float_model(name: str) -> None:
    swapped, reference, config = swapped_pair(name)
    n_layers = config.num_hidden_layers
    assert sum(isinstance(m, GGUFLinear) for m in swapped.modules()) == 4 * n_layers
    assert isinstance(swapped.model.embed_tokens, GGUFEmbedding)
    big = [n for n, p in swapped.named_parameters() if p.dim() == 2]
    assert big == [], f"float matrices left after the swap: {big}"
    cache_shape = swapped.kv_cache_shape(config)
    runs = [PagedRunner(m, cache_shape) for m in (swapped, reference)]
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (20, 6)]  # dense, then int8 rows
    seqs = [[Sequence(), Sequence()] for _ in runs]
    for i, prompt in enumerate(prompts):
        got, want = (r.step([s[i]], [prompt])[0] for r, s in zip(runs, seqs))
        assert_close_logits(got, want, 0.05, f"prefill of {len(prompt)}")
    for step in range(4):
        new = [[int(t)] for t in torch.randint(3, VOCAB, (2,), generator=g)]
        got, want = (r.step(s, new) for r, s in zip(runs, seqs))
        for a, b in zip(got, want):
            assert_close_logits(a, b, 0.05, f"decode step {step}")


@pytest.mark.parametrize("name", list(CASES))
def test_fused_decode_step_matches_the_python_path(name: str) -> None:
    swapped, _, config = swapped_pair(name)
    fused = FusedDecoding(swapped)
    cache_shape = swapped.kv_cache_shape(config)
    python_run, fused_run = PagedRunner(swapped, cache_shape, seed=2), PagedRunner(fused, cache_shape, seed=2)
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (7, 4)]
    a, b = [Sequence(), Sequence()], [Sequence(), Sequence()]
    python_run.step(a, prompts), fused_run.step(b, prompts)
    close = 0
    for step in range(12):  # past the sliding windows and Phi-3's long-rope switch
        batch = slice(0, 2) if step % 3 else slice(0, 1)  # steps of both sequences and of one alone
        toks = [[int(t)] for t in torch.randint(3, VOCAB, (2,), generator=g)][batch]
        for want, got in zip(python_run.step(a[batch], toks), fused_run.step(b[batch], toks)):
            # Same arithmetic up to summation order; an int8 activation rounding that flips on a
            # last-bit difference moves one step's logits by ~1 % at most on these tiny random models.
            assert_close_logits(got, want, 2e-2, f"decode step {step}")
            close += (got - want).abs().max().item() <= 1e-3 * want.abs().max().item()
    assert close >= 18, f"only {close} of 20 decoded rows within 0.1 % of the Python path"
    assert fused.calls == 12


def _random_adapters(module: nn.Module, g: torch.Generator) -> None:
    """Slot 0: rank 4 on every fused part; slot 1: rank 2 on some parts only (others untouched)."""
    for i, layer in enumerate(install_lora_layers(module, num_slots=3, max_rank=4).values()):
        for slot, rank in ((0, 4), (1, 2)):
            parts = {j: (torch.randn(rank, layer.in_features, generator=g) / layer.in_features ** 0.5,
                         torch.randn(width, rank, generator=g) * 0.3)
                     for j, width in enumerate(layer.split_sizes) if slot == 0 or (i + j) % 2}
            layer.set_slot(slot, parts)


@pytest.mark.parametrize("name", ["llama-yarn-biases", "qwen2-qkv-bias", "gemma3", "phi3-longrope"])
def test_fused_decode_step_runs_lora_adapters_like_the_python_path(name: str) -> None:
    swapped, _, config = swapped_pair(name)
    fused = FusedDecoding(swapped)  # built first, as the loader does; it finds the adapters at its first step
    g = torch.Generator().manual_seed(7)
    _random_adapters(swapped, g)
    cache_shape = swapped.kv_cache_shape(config)
    python_run, fused_run = PagedRunner(swapped, cache_shape, seed=2), PagedRunner(fused, cache_shape, seed=2)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (7, 4, 5)]
    a, b = [Sequence() for _ in prompts], [Sequence() for _ in prompts]
    slots = torch.tensor([0, 1, -1])
    with lora_rows(torch.repeat_interleave(slots, torch.tensor([len(p) for p in prompts]))):
        python_run.step(a, prompts), fused_run.step(b, prompts)
    close = 0
    for step in range(6):
        toks = [[int(t)] for t in torch.randint(3, VOCAB, (3,), generator=g)]
        with lora_rows(slots):
            pairs = list(zip(python_run.step(a, toks), fused_run.step(b, toks)))
        for want, got in pairs:
            assert_close_logits(got, want, 2e-2, f"decode step {step}")
            close += (got - want).abs().max().item() <= 1e-3 * want.abs().max().item()
    assert close >= 16, f"only {close} of 18 decoded rows within 0.1 % of the Python path"
    with lora_rows(None):  # slot 0's tokens on the base model, in pages of their own: the adapter mattered
        base = python_run.step([Sequence()], [list(a[0].tokens)])[0][-1]
    adapted = pairs[0][1][-1]
    assert (adapted - base).abs().max().item() > 0.05 * base.abs().max().item()
    assert fused.calls == 6 and sum(isinstance(m, LoRALinear) for m in swapped.modules()) == 4 * config.num_hidden_layers


def test_types_without_a_kernel_load_dequantized_beside_block_layers() -> None:
    """IQ4_NL (gguf-py reads it, no block kernel here): that projection stays a float Linear, dequantized by
    gguf-py's reference; the others run on their blocks; the model tracks the float one."""
    from maxcli.nn import Linear

    _, hf, config = build_pair(CASES["llama3-rope-tied"])
    lazy, dequantized = gguf_state(hf.state_dict())
    rng = np.random.default_rng(0)
    for name, tensor in hf.state_dict().items():
        if name.endswith("down_proj.weight"):
            rows, cols = tensor.shape
            raw = rng.integers(0, 256, size=(rows, cols // 32, 18), dtype=np.uint8)
            raw[..., :2] = rng.uniform(0.005, 0.02, size=(rows, cols // 32, 1)).astype(np.float16).view(np.uint8)
            raw = raw.reshape(rows, -1)
            block = torch.from_numpy(raw.copy())
            lazy[name] = WeightData(name, (rows, cols), Q.IQ4_NL, block.numel(), lambda block=block: block)
            dequantized[name] = torch.from_numpy(dequantize(raw, Q.IQ4_NL).reshape(rows, cols).astype(np.float32))
    reference = LlamaForCausalLM(config)
    reference.load_weights(dequantized)
    swapped = LlamaForCausalLM(config)
    swapped.load_weights(swap_gguf_layers(swapped, lazy, swapped.stacked_params, swapped.ignored_weights))
    downs = [layer.mlp.down_proj for layer in swapped.model.layers]
    assert all(type(d) is not GGUFLinear and isinstance(d, Linear) for d in downs)
    assert sum(isinstance(m, GGUFLinear) for m in swapped.modules()) == 3 * config.num_hidden_layers
    torch.testing.assert_close(downs[0].weight, reference.model.layers[0].mlp.down_proj.weight)
    cache_shape = swapped.kv_cache_shape(config)
    prompt = torch.randint(3, VOCAB, (9,), generator=torch.Generator().manual_seed(4)).tolist()
    got, want = (PagedRunner(m, cache_shape).step([Sequence()], [prompt])[0] for m in (swapped, reference))
    assert_close_logits(got, want, 0.05, "prefill with an IQ4_NL projection")
