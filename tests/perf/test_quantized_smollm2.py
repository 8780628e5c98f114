"""The packed CPU path on the real SmolLM2-135M Q4_1 GGUF vs the exact float32 dequantized path: teacher
forcing over >= 512 tokens of English text, top-1 agreement >= 99 % and perplexity within 1 %; and the
PipelineConfig switch turns the path on (and only then)."""

from __future__ import annotations

import math
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
from maxcli.nn.quantized import QuantizedLinear, quantize_linears
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
        ignored = model.ignored_weights
        swapped = quantize_linears(model, state, model.stacked_params, ignored, skip=("lm_head",))
        assert len(swapped) == 4 * config.num_hidden_layers
    return model


@torch.inference_mode()
def prefill_logits(model: LlamaForCausalLM, config: transformers.LlamaConfig, ids: list[int]) -> torch.Tensor:
    """All-position logits [T, V] of one sequence in one paged prefill over contiguous pages."""
    layers, kv_heads, head_dim = kv_cache_shape(config)
    pages = math.ceil(len(ids) / PAGE)
    shape = (pages, PAGE, kv_heads, head_dim)
    bind_kv_caches(model, [(torch.zeros(shape), torch.zeros(shape)) for _ in range(layers)])
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
        hidden = model(torch.tensor(ids), torch.arange(t))
    return model.compute_logits(hidden)


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    targets = torch.tensor(ids[1:])
    nll = torch.nn.functional.cross_entropy(logits[:-1], targets)
    return math.exp(nll.item())


@pytest.mark.slow
def test_quantized_path_agrees_with_exact_path_under_teacher_forcing(smollm2_gguf: Path) -> None:
    gguf = GGUFFile(smollm2_gguf)
    config = transformers.LlamaConfig(**gguf.hf_config())
    tokenizer = TextTokenizer(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    ids = tokenizer.delegate.encode(TEXT)
    assert len(ids) >= 512
    exact = prefill_logits(load_model(gguf, config, quantized=False), config, ids)
    packed = prefill_logits(load_model(gguf, config, quantized=True), config, ids)
    agreement = (exact.argmax(-1) == packed.argmax(-1)).float().mean().item()
    ppl_exact, ppl_packed = perplexity(exact, ids), perplexity(packed, ids)
    assert ppl_exact < 30, f"the exact path is off: perplexity {ppl_exact:.2f} on plain English"
    assert agreement >= 0.99, f"top-1 agreement {agreement:.4f}"
    assert abs(ppl_packed / ppl_exact - 1) <= 0.01, f"perplexity {ppl_packed:.3f} vs exact {ppl_exact:.3f}"


@pytest.mark.slow
def test_config_switch_enables_the_packed_path_only_when_set(smollm2_gguf: Path) -> None:
    kv = {"kv_cache_num_pages": 8}
    counts = {}
    for flag in (False, True):
        llm = LLM(model=str(smollm2_gguf), max_length=128, cpu_quantized_matmul=flag, kv_cache=kv)
        module = llm.engine.pipeline.pipeline_model.module
        counts[flag] = sum(isinstance(m, QuantizedLinear) for m in module.modules())
        out = llm.generate("The capital of France is", SamplingParams(temperature=0.0, max_new_tokens=4))[0]
        assert "Paris" in out.text
    assert counts == {False: 0, True: 120}
