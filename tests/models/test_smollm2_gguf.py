"""The real SmolLM2-135M Q4_1 GGUF through LlamaForCausalLM (GGUF adapter: renames, Q/K un-permute,
tied head) against transformers loading the same file (both dequantize to float32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from paged_harness import HFReference, PagedRunner, Sequence

from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape
from maxcli.architectures.llama3.weight_adapters import convert_gguf_state_dict
from maxcli.weights import GGUFFile

TOL = 1e-4  # both dequantize the same blocks to float32; only summation order differs


@pytest.mark.slow
def test_smollm2_gguf_matches_transformers(smollm2_gguf: Path) -> None:
    gguf = GGUFFile(smollm2_gguf)
    config = transformers.LlamaConfig(**gguf.hf_config())
    ours = LlamaForCausalLM(config)
    ours.load_weights(convert_gguf_state_dict(gguf.tensors, config))
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32, attn_implementation="eager"
    )
    runner, ref = PagedRunner(ours, kv_cache_shape(config), page_size=16, num_blocks=8), HFReference(hf)
    prompts = [[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 2114], [1, 4194, 314, 4299]]
    seqs = [Sequence(), Sequence()]
    got = runner.step(seqs, prompts)
    for i, p in enumerate(prompts):
        want = ref.step(i, p)
        assert (got[i] - want).abs().max().item() < TOL
        assert torch.equal(got[i][-1].argmax(), want[-1].argmax())
    for _ in range(3):
        new = [[int(g[-1].argmax())] for g in got]
        got = runner.step(seqs, new)
        for i, tok in enumerate(new):
            assert (got[i] - ref.step(i, tok)).abs().max().item() < TOL
