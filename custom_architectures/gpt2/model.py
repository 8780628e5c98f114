# gpt2/model.py — GPT-2 the guide's way: a maxcli.nn.Module network (learned positions, LayerNorm, GELU,
# fused c_attn) and the PipelineModel that runs it over the paged KV cache.
import math
from typing import Any

import torch
import torch.nn.functional as F

from maxcli.kv_cache import build_next_decode_inputs
from maxcli.nn import Embedding, LayerList, LayerNorm, Linear, Module, PagedAttention, bind_kv_caches, load_weights
from maxcli.nn.attention_metadata import attention_metadata
from maxcli.pipelines.lib import ModelInputs, ModelOutputs, PipelineModel


class Attention(Module):
    c_attn: Linear  # q, k and v in one projection
    c_proj: Linear
    attn: PagedAttention  # writes this step's K/V into the paged cache, attends over each sequence's pages
    num_heads: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_attn(x).chunk(3, dim=-1)
        shape = (x.shape[0], self.num_heads, q.shape[-1] // self.num_heads)
        return self.c_proj(self.attn(q.reshape(shape), k.reshape(shape), v.reshape(shape)))


class MLP(Module):
    c_fc: Linear
    c_proj: Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's gelu_new


class Block(Module):
    ln_1: LayerNorm
    attn: Attention
    ln_2: LayerNorm
    mlp: MLP

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(Module):
    wte: Embedding  # token embeddings, also the LM head (tied)
    wpe: Embedding  # learned positions
    h: LayerList
    ln_f: LayerNorm

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.wte.logits(hidden)


def build_gpt2(config: Any, dtype: torch.dtype) -> GPT2:
    d, heads, eps = config.n_embd, config.n_head, config.layer_norm_epsilon
    inner = config.n_inner or 4 * d

    def block() -> Block:
        attention = Attention(c_attn=Linear(d, 3 * d, dtype=dtype), c_proj=Linear(d, d, dtype=dtype),
                              attn=PagedAttention(heads, heads, d // heads, 1.0 / math.sqrt(d // heads)),
                              num_heads=heads)
        return Block(ln_1=LayerNorm(d, eps, dtype=dtype), attn=attention, ln_2=LayerNorm(d, eps, dtype=dtype),
                     mlp=MLP(c_fc=Linear(d, inner, dtype=dtype), c_proj=Linear(inner, d, dtype=dtype)))

    return GPT2(wte=Embedding(config.vocab_size, d, dtype=dtype), wpe=Embedding(config.n_positions, d, dtype=dtype),
                h=LayerList(block() for _ in range(config.n_layer)), ln_f=LayerNorm(d, eps, dtype=dtype))


class GPT2Model(PipelineModel):
    @classmethod
    def calculate_max_seq_len(cls, pipeline_config, huggingface_config) -> int:
        """Return the maximum sequence length this model supports."""
        limit = huggingface_config.n_positions  # learned positions: nothing past the table
        if pipeline_config.max_length is not None and pipeline_config.max_length > limit:
            raise ValueError(f"max_length {pipeline_config.max_length} exceeds GPT-2's {limit} positions")
        return pipeline_config.max_length or limit

    def load_model(self) -> GPT2:
        """Build the network, load the adapted checkpoint into it, and give each layer its KV cache."""
        with torch.device(self.device):
            model = build_gpt2(self.huggingface_config, self.dtype)
        load_weights(model, self.weights)
        kv = self.kv_manager
        bind_kv_caches(model, [kv.layer_caches(i) for i in range(kv.params.num_layers)])
        return model.eval()

    def execute(self, model_inputs: ModelInputs) -> ModelOutputs:
        """Run inference on the compiled model."""
        rows = model_inputs.attention.logits_indices
        with torch.inference_mode(), attention_metadata(model_inputs.attention):
            hidden = self.model(model_inputs.input_ids, model_inputs.positions)
            if model_inputs.return_n_logits == -1:  # every token's logits (prompt logprobs)
                all_logits = self.model.logits(hidden)
                return ModelOutputs(logits=all_logits[rows], all_logits=all_logits)
            return ModelOutputs(logits=self.model.logits(hidden[rows]))

    def prepare_initial_token_inputs(self, context_batch, kv_cache_inputs=None, return_n_logits=1) -> ModelInputs:
        """Prepare inputs for the first forward pass (prefill)."""
        kv = kv_cache_inputs if kv_cache_inputs is not None else self.kv_manager.fetch(list(context_batch))
        return ModelInputs(input_ids=kv.input_ids, positions=kv.positions, attention=kv.attention,
                           request_ids=[c.request_id for c in kv.sample_contexts], return_n_logits=return_n_logits)

    def prepare_next_token_inputs(self, next_tokens, prev_model_inputs) -> ModelInputs:
        """Prepare inputs for subsequent forward passes (decode)."""
        kv = build_next_decode_inputs(self.kv_manager, prev_model_inputs.attention, prev_model_inputs.request_ids,
                                      next_tokens)
        return ModelInputs(input_ids=kv.input_ids, positions=kv.positions, attention=kv.attention,
                           request_ids=list(prev_model_inputs.request_ids))
