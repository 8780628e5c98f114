"""The packed CPU path on the real SmolLM2-135M Q4_1 GGUF vs the exact float32 dequantized path: teacher
forcing over >= 512 tokens of English text, top-1 agreement >= 99 % and perplexity within 1 % (packed
projections and the two-stage LM head together); the two-stage head alone against the float32 head on the
same hidden states; and the PipelineConfig switch turns the path on (and only then)."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape
from maxcli.architectures.llama3.weight_adapters import convert_gguf_state_dict
from maxcli.engine.llm import LLM
from maxcli.interfaces import SamplingParams
from maxcli.nn import bind_kv_caches
from maxcli.nn.attention_metadata import AttentionMetadata, attention_metadata
from maxcli.nn.lm_head import TwoStageLMHead
from maxcli.nn.quantized import QuantizedLinear
from maxcli.pipelines.lib.factory import quantize_module_linears
from maxcli.pipelines.lib.tokenizer import TextTokenizer
from maxcli.weights import GGUFFile

TEXT = """\
The old lighthouse stood at the edge of the northern cliffs for nearly two hundred years. It was built by a
small community of fishermen who had lost too many boats to the rocks that hid beneath the grey water. Every
evening the keeper climbed the narrow spiral stairs, trimmed the wick, polished the great lens, and watched
the beam sweep across the waves until dawn. In winter the storms came in from the sea without warning, and
the wind pressed so hard against the windows that the whole tower seemed to hum like a plucked string.

The keeper's daughter grew up in the small stone house at the foot of the tower. She learned to read the
weather from the colour of the sky and the behaviour of the gulls, and she could tell the names of the
ships by the shape of their sails long before they came close enough to see the flags. Her father taught
her to keep a careful log: the time the lamp was lit, the direction of the wind, the height of the tide,
and every vessel that passed. Those notebooks, filled with neat handwriting, are now kept in the town
museum, where visitors can read about the night the steamer lost its rudder and drifted towards the reef.

That night the lamp had failed twice because the oil had thickened in the cold. The girl, who was only
fourteen, ran up the stairs with a pot of warm oil while her father rowed out with two neighbours to reach
the steamer. She kept the light burning for eleven hours, refilling the reservoir every hour and wiping the
frost from the glass with her sleeve. When the sun finally rose, the steamer was anchored safely in the
bay, and all forty passengers were brought ashore in the small boats of the village.

Years later, when the lighthouse was converted to run on electricity, the keepers were no longer needed.
The last of them locked the door, handed the keys to an engineer from the city, and moved inland to a farm
where he grew apples and kept bees. He said that he missed the sound of the sea more than anything else,
and that on quiet evenings he would sometimes walk to the top of the hill behind his house simply to see
the distant flash of the light, regular as a heartbeat, still guiding ships along the dangerous coast.

Today the tower is painted white and red, and a small automatic lamp turns inside the old lens. Children
on school trips climb the stairs and press their faces to the windows, trying to spot seals on the rocks
below. Their teachers tell them the story of the keeper's daughter, and most of them listen in silence,
imagining the storm, the cold, and the long night of waiting for the morning to come.
"""

PAGE = 16


def load_model(gguf: GGUFFile, config: transformers.LlamaConfig, quantized: bool) -> LlamaForCausalLM:
    model = LlamaForCausalLM(config).eval()
    state = convert_gguf_state_dict(gguf.tensors, config)
    model.load_weights(state)
    if quantized:
        quantize_module_linears(model, state)  # what PipelineConfig.cpu_quantized_matmul runs
        assert sum(isinstance(m, QuantizedLinear) for m in model.modules()) == 4 * config.num_hidden_layers
        assert isinstance(model.packed_head, TwoStageLMHead)
    return model


def bind_fresh_caches(model: LlamaForCausalLM, config: transformers.LlamaConfig, tokens: int) -> int:
    """Zeroed float32 caches with room for `tokens` (pages 0..n-1 in order); returns the page count."""
    layers, kv_heads, head_dim = kv_cache_shape(config)
    pages = math.ceil(tokens / PAGE)
    shape = (pages, PAGE, kv_heads, head_dim)
    bind_kv_caches(model, [(torch.zeros(shape), torch.zeros(shape)) for _ in range(layers)])
    return pages


@torch.inference_mode()
def prefill_hidden(model: LlamaForCausalLM, config: transformers.LlamaConfig, ids: list[int]) -> torch.Tensor:
    """All-position final hidden states [T, H] of one sequence in one paged prefill over contiguous pages."""
    pages = bind_fresh_caches(model, config, len(ids))
    t = len(ids)
    meta = AttentionMetadata(
        slot_mapping=torch.arange(t, dtype=torch.int64),
        block_tables=torch.arange(pages, dtype=torch.int32)[None],
        cu_seqlens_q=torch.tensor([0, t], dtype=torch.int32),
        seq_lens_k=torch.tensor([t], dtype=torch.int32),
        max_seqlen_q=t,
        max_seqlen_k=t,
    )
    with attention_metadata(meta):
        return model(torch.tensor(ids), torch.arange(t))


@torch.inference_mode()
def prefill_logits(model: LlamaForCausalLM, config: transformers.LlamaConfig, ids: list[int]) -> torch.Tensor:
    """All-position logits [T, V] through the model's own head (two-stage on the packed path)."""
    return model.compute_logits(prefill_hidden(model, config, ids))


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    targets = torch.tensor(ids[1:])
    nll = torch.nn.functional.cross_entropy(logits[:-1], targets)
    return math.exp(nll.item())


@pytest.fixture(scope="module")
def teacher_forced(smollm2_gguf: Path) -> dict:
    """Token ids of TEXT, the exact path's logits, and the packed model with its final hidden states."""
    gguf = GGUFFile(smollm2_gguf)
    config = transformers.LlamaConfig(**gguf.hf_config())
    tokenizer = TextTokenizer(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    ids = tokenizer.delegate.encode(TEXT)
    assert len(ids) >= 512
    exact = prefill_logits(load_model(gguf, config, quantized=False), config, ids)
    packed_model = load_model(gguf, config, quantized=True)
    hidden = prefill_hidden(packed_model, config, ids)
    # The same prefill with the bf16 copies switched off: every row through the int4 kernels (what decode
    # steps of fewer than DENSE_MIN_ROWS sequences run).
    for layer in packed_model.modules():
        if isinstance(layer, QuantizedLinear):
            layer.dense_off, layer.dense = layer.dense, None
    kernel_hidden = prefill_hidden(packed_model, config, ids)
    for layer in packed_model.modules():
        if isinstance(layer, QuantizedLinear):
            layer.dense = layer.dense_off
    return {
        "ids": ids,
        "exact": exact,
        "packed_model": packed_model,
        "packed_hidden": {"bf16 rows": hidden, "int4 kernels": kernel_hidden},
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", ["bf16 rows", "int4 kernels"])
def test_quantized_path_agrees_with_exact_path_under_teacher_forcing(teacher_forced: dict, path: str) -> None:
    ids, exact = teacher_forced["ids"], teacher_forced["exact"]
    model, hidden = teacher_forced["packed_model"], teacher_forced["packed_hidden"][path]
    assert not torch.equal(hidden, teacher_forced["packed_hidden"]["bf16 rows" if path != "bf16 rows" else "int4 kernels"])
    with torch.inference_mode():
        if path == "int4 kernels":  # the head's int8 approximation too, not its bf16 GEMM
            model.packed_head.dense_min_rows, rows = 10**9, model.packed_head.dense_min_rows
        try:
            packed = model.compute_logits(hidden)
        finally:
            if path == "int4 kernels":
                model.packed_head.dense_min_rows = rows
    agreement = (exact.argmax(-1) == packed.argmax(-1)).float().mean().item()
    ppl_exact, ppl_packed = perplexity(exact, ids), perplexity(packed, ids)
    print(f"\n{path}: top-1 agreement {agreement:.4f} over {len(ids) - 1} positions, perplexity {ppl_packed:.3f} vs exact {ppl_exact:.3f}")
    assert ppl_exact < 30, f"the exact path is off: perplexity {ppl_exact:.2f} on plain English"
    assert agreement >= 0.99, f"top-1 agreement {agreement:.4f}"
    assert abs(ppl_packed / ppl_exact - 1) <= 0.01, f"perplexity {ppl_packed:.3f} vs exact {ppl_exact:.3f}"


@pytest.mark.slow
def test_two_stage_head_matches_the_float32_head_on_its_candidates(teacher_forced: dict) -> None:
    """Same hidden states through the float32 head and the two-stage head: identical greedy tokens at every
    position, and each row's 16 best exact logits reproduced to float32 summation-order error."""
    model, hidden = teacher_forced["packed_model"], teacher_forced["packed_hidden"]["int4 kernels"]
    with torch.inference_mode():
        model.packed_head.dense_min_rows, rows = 10**9, model.packed_head.dense_min_rows  # the int8 stage
        try:
            two_stage = model.compute_logits(hidden)
            approx = model.packed_head.approximate(hidden)
        finally:
            model.packed_head.dense_min_rows = rows
        full = torch.nn.functional.linear(hidden, model.model.embed_tokens.weight)
    assert torch.equal(two_stage.argmax(-1), full.argmax(-1))
    best = full.topk(16, dim=-1).indices
    torch.testing.assert_close(two_stage.gather(1, best), full.gather(1, best), rtol=0, atol=1e-4)
    # The approximation alone is measurably off (else the second stage would be dead weight).
    assert (approx.gather(1, best) - full.gather(1, best)).abs().max() > 1e-2
    ids = teacher_forced["ids"]
    assert abs(perplexity(two_stage, ids) / perplexity(full, ids) - 1) <= 0.005


def test_two_stage_head_with_k_equal_to_vocab_is_the_float32_head() -> None:
    torch.manual_seed(0)
    weight, hidden = torch.randn(96, 32), torch.randn(5, 32)
    for approx in ("int8", "bf16"):
        head = TwoStageLMHead(top_k=96, approx=approx)
        torch.testing.assert_close(head(hidden, weight), hidden @ weight.T, rtol=1e-5, atol=1e-5)
    head = TwoStageLMHead(top_k=4)
    other = torch.randn(96, 32)
    out = head(hidden, other)  # a different weight rebuilds the approximation
    assert head._source is other
    assert torch.equal(out.argmax(-1), (hidden @ other.T).argmax(-1))


@pytest.mark.slow
def test_config_switch_enables_the_packed_path_only_when_set(smollm2_gguf: Path) -> None:
    kv = {"kv_cache_num_pages": 8}
    counts = {}
    for flag in (False, True):
        llm = LLM(model=str(smollm2_gguf), max_length=128, cpu_quantized_matmul=flag, kv_cache=kv)
        module = llm.engine.pipeline.pipeline_model.module
        counts[flag] = sum(isinstance(m, QuantizedLinear) for m in module.modules())
        assert isinstance(module.packed_head, TwoStageLMHead) is flag
        out = llm.generate("The capital of France is", SamplingParams(temperature=0.0, max_new_tokens=4))[0]
        assert "Paris" in out.text
    assert counts == {False: 0, True: 120}


@torch.inference_mode()
def decode_logits(model: LlamaForCausalLM, config: transformers.LlamaConfig, ids: list[int]) -> torch.Tensor:
    """Logits [T, V] of one sequence fed one token per step (T decode steps of one sequence each)."""
    pages = bind_fresh_caches(model, config, len(ids))
    table = torch.arange(pages, dtype=torch.int32)[None]
    rows = []
    for t in range(len(ids)):
        meta = AttentionMetadata(
            slot_mapping=torch.tensor([t]),
            block_tables=table,
            cu_seqlens_q=torch.tensor([0, 1], dtype=torch.int32),
            seq_lens_k=torch.tensor([t + 1], dtype=torch.int32),
            max_seqlen_q=1,
            max_seqlen_k=t + 1,
            is_decode=True,
        )
        with attention_metadata(meta):
            rows.append(model.compute_logits(model(torch.tensor(ids[t : t + 1]), torch.tensor([t]))))
    return torch.cat(rows)


@pytest.mark.slow
def test_fused_decode_step_matches_the_python_path_and_the_exact_path(teacher_forced: dict) -> None:
    """The fused C++ decode step (maxcli.ops.cpu_decode), when this machine can build it: fed the text one
    token at a time, its logits match the Python decode path's, and against the exact path it keeps the
    packed path's bar (top-1 >= 99 %, perplexity within 1 %)."""
    model = teacher_forced["packed_model"]
    fused = model.model.decode_one
    if fused is None:
        # Only a missing compiler may skip this (the CI skip policy allows "C++ compiler" reasons).
        if not (os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")):
            pytest.skip("no C++ compiler (c++ / g++) on PATH: the fused CPU decode step cannot be built")
        if os.environ.get("MAXCLI_CPU_DECODE", "1") == "0":
            pytest.skip("MAXCLI_CPU_DECODE=0 switches the fused CPU decode step off")
        pytest.fail("the fused CPU decode step was not built though a C++ compiler is on PATH (see the warning)")
    ids, exact = teacher_forced["ids"], teacher_forced["exact"]
    with_fused = decode_logits(model, model.config, ids)
    model.model.decode_one = None
    try:
        python_path = decode_logits(model, model.config, ids)
    finally:
        model.model.decode_one = fused
    # The two differ by summation order and the bf16 roundings that follow from it; the yardstick is how
    # much the Python path itself moves between one prefill and token-by-token decode (same weights).
    same = (with_fused.argmax(-1) == python_path.argmax(-1)).float().mean().item()
    drift = (with_fused - python_path).abs().mean().item()
    with torch.inference_mode():
        prefill = model.compute_logits(teacher_forced["packed_hidden"]["int4 kernels"])
    yardstick = (python_path - prefill).abs().mean().item()
    print(f"\nfused vs Python decode: top-1 same {same:.4f}, mean |diff| {drift:.4f} (decode vs prefill {yardstick:.4f})")
    assert same >= 0.99
    assert drift <= 2 * yardstick
    agreement = (with_fused.argmax(-1) == exact.argmax(-1)).float().mean().item()
    ppl_fused, ppl_exact = perplexity(with_fused, ids), perplexity(exact, ids)
    print(f"\nfused decode: top-1 agreement {agreement:.4f}, perplexity {ppl_fused:.3f} vs exact {ppl_exact:.3f}")
    assert agreement >= 0.99, f"top-1 agreement {agreement:.4f}"
    assert abs(ppl_fused / ppl_exact - 1) <= 0.01


def test_fused_decode_step_covers_only_its_contract(teacher_forced: dict, smollm2_gguf: Path, monkeypatch) -> None:
    from maxcli.ops import cpu_decode

    assert cpu_decode._eligible(teacher_forced["packed_model"]) is None
    gguf = GGUFFile(smollm2_gguf)
    exact = load_model(gguf, transformers.LlamaConfig(**gguf.hf_config()), quantized=False)
    assert cpu_decode._eligible(exact) == "a projection that is not bias-free int4"
    assert not cpu_decode.install(exact) and exact.model.decode_one is None
    fused = teacher_forced["packed_model"].model.decode_one
    if fused is not None:  # a bad slot or page is an error from the op, not a stray write
        model, ids = teacher_forced["packed_model"], teacher_forced["ids"][:4]
        bind_fresh_caches(model, model.config, 2 * PAGE)  # two pages: slot 2 * PAGE and page 7 lie outside
        for slot, table in ((2 * PAGE, [0]), (0, [7])):
            meta = AttentionMetadata(
                slot_mapping=torch.tensor([slot]), block_tables=torch.tensor([table], dtype=torch.int32),
                cu_seqlens_q=torch.tensor([0, 1], dtype=torch.int32), seq_lens_k=torch.tensor([1], dtype=torch.int32),
                max_seqlen_q=1, max_seqlen_k=1,
            )
            with attention_metadata(meta), torch.inference_mode(), pytest.raises(RuntimeError, match="outside the cache"):
                fused(torch.tensor(ids[:1]), torch.tensor([0]))
    monkeypatch.setattr(cpu_decode, "_loaded", None)
    monkeypatch.setenv("MAXCLI_CPU_DECODE", "0")
    assert cpu_decode.load() is False  # switched off: the Python path runs
