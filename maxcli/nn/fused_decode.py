"""A decode step (any number of sequences, one new token each) of a whole decoder in one C++ call
(csrc/decode_step.cpp), for modules whose projections are GGUF blocks (maxcli.nn.gguf_linear).

`fused_decode_step(module)` inspects a built module and returns a FusedDecodeStep, or None with the reason
logged. It reads structure, not architecture names: the model, each decoder layer, attention and MLP
declare the data flow of their `forward` in a `decode_layout` class attribute, and a class counts only
when the same class defines both (a subclass that overrides `forward` without restating its layout is left
to the Python path). Layouts covered: model "decoder" (embed -> layers -> final RMSNorm), layers
"pre_norm" (Llama, Mistral, Qwen 2/3, Phi-3) and "sandwich" (Gemma 3), attention "gqa" (fused qkv, optional
per-head q/k norms, rope, paged attention, o projection), MLP "gated" (SiLU or tanh-GELU).

Cost per step: one embedding lookup, one rope-row gather per rope table, one C++ call; the arithmetic is
the Python path's up to summation order. LoRA adapters installed on the projections (maxcli.nn.lora) run
inside the same call: each adapter row adds its slot's B (A x) after the projection, row by row.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from maxcli import ops
from maxcli.nn.attention_metadata import get_attention_metadata
from maxcli.nn.gguf_linear import GGUFLinear
from maxcli.nn.lora import LoRALinear
from maxcli.nn.norm import RMSNorm

logger = logging.getLogger(__name__)

DENSE_MIN_ROWS = 16  # csrc/gguf_matmul.cpp: from this many rows on, projections take the dense bf16 path


def decode_row_chunks(meta: Any, rows: int) -> list[slice]:
    """Rows of a decode step in the pieces its products must run in. A step whose rows include drafted
    tokens of fewer sequences than the kernels' dense threshold runs in chunks under it, so every row takes
    the integer path a plain decode of those sequences takes (same arithmetic, so the same greedy tokens).
    A sequence's rows are consecutive and chunks run in order, so each row still finds the K/V of the rows
    before it."""
    sequences = meta.num_decode_sequences
    step = DENSE_MIN_ROWS - 1 if sequences is not None and sequences < DENSE_MIN_ROWS <= rows else max(rows, 1)
    return [slice(i, i + step) for i in range(0, rows, step)]

_ACTIVATIONS = {ops.silu_and_mul: 0, ops.gelu_tanh_and_mul: 1}
_NORMS = {
    "pre_norm": ("input_layernorm", "post_attention_layernorm", None, None),
    "sandwich": ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm"),
}


def _layout(obj: Any) -> str | None:
    """obj's declared decode_layout when the class that declares it also defines forward, else None."""
    def owner(attr: str) -> type | None:
        return next((c for c in type(obj).__mro__ if attr in c.__dict__), None)

    declared = owner("decode_layout")
    return obj.decode_layout if declared is not None and declared is owner("forward") else None


def _unsupported(module: Any) -> str | None:
    """Why the module is outside the fused step's contract, or None."""
    inner = getattr(module, "model", None)
    if inner is None or _layout(inner) != "decoder" or not isinstance(getattr(inner, "norm", None), RMSNorm):
        return "not a decoder model with a declared layout"
    layers = list(inner.layers)
    kinds = {_layout(layer) for layer in layers}
    if len(kinds) != 1 or not kinds <= set(_NORMS):
        return f"decoder layers of layout {sorted(map(str, kinds))}"
    offset, eps = inner.norm.weight_offset, inner.norm.eps
    first = layers[0].self_attn
    for layer in layers:
        attn, mlp = layer.self_attn, layer.mlp
        if _layout(attn) != "gqa" or _layout(mlp) != "gated":
            return "attention or MLP outside the declared layouts"
        for proj in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
            if not isinstance(proj, GGUFLinear):
                return "a projection that is not GGUF blocks"
        norms = [getattr(layer, n) for n in _NORMS[_layout(layer)] if n] + [n for n in (attn.q_norm, attn.k_norm) if n is not None]
        if any(not isinstance(n, RMSNorm) or n.weight_offset != offset or n.eps != eps for n in norms):
            return "norms with different offsets or eps"
        if (attn.q_norm is None) != (attn.k_norm is None) or mlp.act_and_mul not in _ACTIVATIONS:
            return "one-sided q/k norm or an activation without a kernel"
        same = (attn.num_heads, attn.num_kv_heads, attn.head_dim, attn.attn.scale, attn.attn.softcap)
        if same != (first.num_heads, first.num_kv_heads, first.head_dim, first.attn.scale, first.attn.softcap):
            return "layers with different attention shapes"
    ropes = list(inner.rotary_embs.values())
    if len({r.is_neox for r in ropes}) != 1 or any(r.cos_sin_cache.shape[1] > first.head_dim for r in ropes):
        return "rope tables of different pair layouts"
    return None


def fused_decode_step(module: Any) -> "FusedDecodeStep | None":
    reason = _unsupported(module)
    if reason is not None:
        logger.info("fused CPU decode step not used: %s", reason)
        return None
    from maxcli.ops import cpu_ext

    return FusedDecodeStep(module) if cpu_ext.load() else None


def _present(t: torch.Tensor | None) -> torch.Tensor:
    return torch.empty(0) if t is None else t


class FusedDecodeStep:
    """Callable(input_ids [B], positions [B]) -> final hidden [B, hidden] for a step of B sequences with one
    new token each, or None to use the Python path (a prefill chunk, a skipped KV slot, a cache that is not
    contiguous float32).

    It holds the module's own tensors (norm weights are filled in place when weights load, so it may be
    built before that); the KV caches are re-read whenever they are re-bound."""

    def __init__(self, module: Any) -> None:
        self.model = inner = module.model
        layers = list(inner.layers)
        attn0 = layers[0].self_attn
        self.heads = (attn0.num_heads, attn0.num_kv_heads, attn0.head_dim)
        self.scale, self.softcap = float(attn0.attn.scale), float(attn0.attn.softcap or 0.0)
        self.offset, self.eps = float(inner.norm.weight_offset), float(inner.norm.eps)
        layout = _layout(layers[0])
        self.sandwich = layout == "sandwich"
        self.act = _ACTIVATIONS[layers[0].mlp.act_and_mul]
        self.ropes = dict(inner.rotary_embs.items())
        tables = list(self.ropes)
        self.layer_tables = [tables.index(key) for key in inner.layer_rope_keys]
        self.neox = next(iter(self.ropes.values())).is_neox
        self.windows = [int(l.self_attn.attn.sliding_window or 0) for l in layers]
        self.norms: list[torch.Tensor] = []
        self.raws: list[torch.Tensor] = []
        self.qtypes: list[int] = []
        self.rows: list[int] = []
        self.parts: list[int] = []
        self.biases: list[torch.Tensor] = []
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp
            names = _NORMS[layout]
            self.norms += [_present(getattr(layer, n).weight if n else None) for n in names]
            self.norms += [_present(None if n is None else n.weight) for n in (attn.q_norm, attn.k_norm)]
            for proj in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
                self.raws += proj.raws
                self.qtypes += [int(q) for q in proj.qtypes]
                self.rows += proj.rows
                self.parts.append(len(proj.rows))
                self.biases.append(_present(proj.bias))
        self.final_norm = inner.norm.weight
        self._bound: torch.Tensor | None = None
        self._caches: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])
        self._caches_ok = False
        self._lora: tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[int]] | None = None

    def _lora_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[int]] | None:
        """Per projection, the LoRALinear's A, B^T and rank table (empty: not wrapped) and the fused part
        widths, or None when a wrapped projection does not wrap the GGUF blocks this step reads."""
        a: list[torch.Tensor] = []
        b: list[torch.Tensor] = []
        ranks: list[torch.Tensor] = []
        widths: list[int] = []
        none = (torch.empty(0), torch.empty(0), torch.empty(0, dtype=torch.int32))
        index = 0
        for layer in self.model.layers:
            for proj in (layer.self_attn.qkv_proj, layer.self_attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj):
                raws = self.raws[index : index + self.parts[len(a)]]
                index += len(raws)
                tensors = none
                if isinstance(proj, LoRALinear):
                    base = proj.base_layer
                    if not isinstance(base, GGUFLinear) or [r.data_ptr() for r in base.raws] != [r.data_ptr() for r in raws]:
                        return None
                    if proj.lora_a.dtype != torch.float32 or proj.lora_a.device.type != "cpu":
                        return None
                    tensors = (proj.lora_a, proj.lora_b, proj.ranks)
                    widths += proj.split_sizes
                for out, t in zip((a, b, ranks), tensors):
                    out.append(t)
        return a, b, ranks, widths

    def _fresh_caches(self) -> bool:
        layers = self.model.layers
        if layers[0].self_attn.attn.k_cache is not self._bound:
            k = [l.self_attn.attn.k_cache for l in layers]
            v = [l.self_attn.attn.v_cache for l in layers]
            self._bound, self._caches = k[0], (k, v)
            self._caches_ok = all(c is not None and c.dtype == torch.float32 and c.is_contiguous() for c in k + v)
        return self._caches_ok

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 adapter_rows: torch.Tensor | None = None) -> torch.Tensor | None:
        """adapter_rows: each row's LoRA slot [B] (-1: base model), or None for a step without adapters."""
        meta = get_attention_metadata()
        batch = input_ids.shape[0]
        if meta.max_seqlen_q != 1 or meta.block_tables.shape[0] != batch or input_ids.device.type != "cpu":
            return None
        if not self._fresh_caches() or bool((meta.slot_mapping < 0).any()):
            return None
        lora: tuple[Any, ...] = ([], [], [], [])
        rows = torch.empty(0, dtype=torch.int64)
        if adapter_rows is not None:
            if self._lora is None:
                self._lora = self._lora_tensors()
            if self._lora is None:
                return None
            lora, rows = self._lora, adapter_rows.to(torch.int64).contiguous()
        chunks = decode_row_chunks(meta, batch)
        if len(chunks) == 1:
            return self._run(input_ids, positions, meta.block_tables, meta.seq_lens_k, meta.slot_mapping, lora, rows)
        return torch.cat([self._run(input_ids[c], positions[c], meta.block_tables[c], meta.seq_lens_k[c],
                                    meta.slot_mapping[c], lora, rows[c] if rows.numel() else rows) for c in chunks])

    def _run(self, input_ids: torch.Tensor, positions: torch.Tensor, block_tables: torch.Tensor,
             seq_lens: torch.Tensor, slots: torch.Tensor, lora: tuple[Any, ...], lora_rows: torch.Tensor) -> torch.Tensor:
        h = self.model.embed(input_ids).float().contiguous()
        cos_sin = torch.stack([rope.cos_sin_cache[rope.table_positions(positions)].float() for rope in self.ropes.values()])
        heads, kv_heads, head_dim = self.heads
        return torch.ops.maxcli_cpu.decode_step(
            h, self.norms, self.raws, self.qtypes, self.rows, self.parts, self.biases, *self._caches,
            self.final_norm, cos_sin, block_tables.to(torch.int32).contiguous(),
            seq_lens.to(torch.int32).contiguous(), slots.to(torch.int64).contiguous(),
            self.layer_tables, self.windows,
            heads, kv_heads, head_dim, self.neox, self.sandwich, self.act, self.offset, self.scale, self.softcap, self.eps,
            *lora, lora_rows,
        )
