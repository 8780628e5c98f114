"""The GGUF-native CPU path (the default for GGUF on a CPU) on both real files against the float32
dequantized reference path (--no-cpu-quantized-matmul), as issue 18 asks: teacher forcing over >= 512
tokens of English text, top-1 agreement >= 95 % and perplexity within 1 %, through the dense path
(prefill: bf16 GEMMs on transient dequantized row blocks) and through the int8 kernels (chunks of 8 rows);
the fused decode step gives the Python path's greedy tokens; the config switch and its fallbacks."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch

from maxcli.engine.llm import LLM
from maxcli.interfaces import SamplingParams
from maxcli.nn import bind_kv_caches
from maxcli.nn.attention_metadata import AttentionMetadata, attention_metadata
from maxcli.nn.gguf_linear import GGUFEmbedding, GGUFLinear
from maxcli.ops import cpu_ext

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cpu_kernels")]

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


def load(path: Path, native: bool) -> LLM:
    return LLM(model=str(path), max_length=1024, max_batch_size=1, cpu_quantized_matmul=native,
               kv_cache={"kv_cache_num_pages": 64, "enable_prefix_caching": False})


@torch.inference_mode()
def teacher_forced_logits(module: torch.nn.Module, ids: list[int], chunk: int) -> torch.Tensor:
    """Logits [T, V] of one sequence fed `chunk` tokens per forward over fresh contiguous pages."""
    layers, kv_heads, head_dim = module.kv_cache_shape(module.config)
    pages = math.ceil(len(ids) / PAGE)
    bind_kv_caches(module, [(torch.zeros(pages, PAGE, kv_heads, head_dim), torch.zeros(pages, PAGE, kv_heads, head_dim))
                            for _ in range(layers)])
    table = torch.arange(pages, dtype=torch.int32)[None]
    out = []
    for start in range(0, len(ids), chunk):
        end = min(start + chunk, len(ids))
        meta = AttentionMetadata(
            slot_mapping=torch.arange(start, end), block_tables=table,
            cu_seqlens_q=torch.tensor([0, end - start], dtype=torch.int32),
            seq_lens_k=torch.tensor([end], dtype=torch.int32), max_seqlen_q=end - start, max_seqlen_k=end,
        )
        with attention_metadata(meta):
            out.append(module.compute_logits(module(torch.tensor(ids[start:end]), torch.arange(start, end))))
    return torch.cat(out)


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    return math.exp(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item())


@pytest.fixture(scope="module", params=["smollm2", "qwen25_coder"])
def real_file(request: pytest.FixtureRequest) -> dict:
    path = request.getfixturevalue("smollm2_gguf" if request.param == "smollm2" else "qwen_gguf")
    exact = load(path, native=False)
    ids = exact.engine.tokenizer.delegate.encode(TEXT)
    assert len(ids) >= 512
    reference = teacher_forced_logits(exact.engine.pipeline.pipeline_model.module, ids, chunk=len(ids))
    del exact
    return {"path": path, "ids": ids, "reference": reference, "native": load(path, native=True)}


@pytest.mark.parametrize("chunk", [100_000, 8], ids=["dense prefill", "int8 kernels"])
def test_native_path_agrees_with_the_float32_path_under_teacher_forcing(real_file: dict, chunk: int) -> None:
    ids, reference = real_file["ids"], real_file["reference"]
    logits = teacher_forced_logits(real_file["native"].engine.pipeline.pipeline_model.module, ids, chunk)
    agreement = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
    ppl_ref, ppl = perplexity(reference, ids), perplexity(logits, ids)
    print(f"\n{real_file['path'].name}, chunks of {min(chunk, len(ids))}: top-1 {agreement:.4f} over {len(ids)} "
          f"positions, perplexity {ppl:.3f} vs {ppl_ref:.3f}")
    assert ppl_ref < 60, f"the reference path is off: perplexity {ppl_ref:.2f} on plain English"
    assert agreement >= 0.95, f"top-1 agreement {agreement:.4f}"
    assert abs(ppl / ppl_ref - 1) <= 0.01, f"perplexity {ppl:.3f} vs {ppl_ref:.3f}"


def test_fused_decode_step_gives_the_python_paths_tokens(real_file: dict) -> None:
    llm = real_file["native"]
    pipeline_model = llm.engine.pipeline.pipeline_model
    assert pipeline_model.fused_decode is not None
    params = SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    fused = llm.generate(["def fibonacci(n):"], params)[0].token_ids
    step, pipeline_model.fused_decode = pipeline_model.fused_decode, None
    try:
        python = llm.generate(["def fibonacci(n):"], params)[0].token_ids
    finally:
        pipeline_model.fused_decode = step
    assert fused == python


def test_weights_stay_in_their_blocks(real_file: dict) -> None:
    module = real_file["native"].engine.pipeline.pipeline_model.module
    assert isinstance(module.model.embed_tokens, GGUFEmbedding)
    assert sum(isinstance(m, GGUFLinear) for m in module.modules()) == 4 * module.config.num_hidden_layers
    float_values = sum(p.numel() for p in module.parameters())
    block_bytes = sum(b.numel() for n, b in module.named_buffers() if "blocks" in n)
    assert float_values * 4 < 0.01 * block_bytes, "a float copy of a matrix survived the swap"


def test_switch_and_fallbacks(smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    kv = {"kv_cache_num_pages": 8}

    def native_layers(**kwargs) -> tuple[int, bool, str]:
        llm = LLM(model=str(smollm2_gguf), max_length=128, kv_cache=kv, **kwargs)
        pm = llm.engine.pipeline.pipeline_model
        out = llm.generate("The capital of France is", SamplingParams(temperature=0.0, max_new_tokens=4))[0].text
        return sum(isinstance(m, GGUFLinear) for m in pm.module.modules()), pm.fused_decode is not None, out

    count, fused, text = native_layers()  # the default
    assert count == 120 and fused and "Paris" in text
    count, fused, text = native_layers(cpu_quantized_matmul=False)
    assert count == 0 and not fused and "Paris" in text
    monkeypatch.setenv("MAXCLI_CPU_DECODE", "0")
    assert native_layers()[:2] == (120, False)
    monkeypatch.delenv("MAXCLI_CPU_DECODE")
    monkeypatch.setenv("MAXCLI_CPU_EXT", "0")
    cpu_ext.reset()
    try:
        with caplog.at_level(logging.WARNING, logger="maxcli.ops.cpu_ext"):
            count, fused, text = native_layers()
        assert count == 0 and not fused and "Paris" in text
        assert [r.getMessage() for r in caplog.records if r.name == "maxcli.ops.cpu_ext"] == [
            "MAXCLI_CPU_EXT=0: the C++ CPU kernels are off, GGUF weights run dequantized"
        ]
    finally:
        monkeypatch.delenv("MAXCLI_CPU_EXT")
        cpu_ext.reset()
