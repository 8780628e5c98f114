"""Speculative decoding (n-gram drafts): the proposer, exact greedy outputs on both real GGUF models (solo and
in one batch, quantized default path), the rejection rule's distribution, and page accounting under
preemption (hypothesis) on a tiny random model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxcli.engine.llm import LLM
from maxcli.engine.sampler import Sampler
from maxcli.engine.speculative import NgramProposer, accepted_prefix
from maxcli.interfaces import RequestID, SamplingParams, TextGenerationRequest
from maxcli.pipelines.core import TextContext

CODE = '''def moving_average(values, window):
    """Average of each run of `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    out = []
    total = sum(values[:window])
    out.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out
'''
EDITS = ["rename `values` to `xs`", "rename `total` to `running`", "rename `out` to `result`",
         "make the error message say 'window must be at least 1'"]
OTHER = ["Tell me a short story about a lighthouse keeper.", "What is the capital of Peru?",
         "Write a haiku about rain.", "List three uses of copper."]


def prompts(n: int) -> list[str]:
    """Mixed lengths: code-editing prompts (the answer repeats the prompt) and open questions."""
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(f"```python\n{CODE}```\nRewrite the function and {EDITS[i // 2 % len(EDITS)]}. "
                       "Reply with the code only.")
        else:
            out.append(OTHER[i // 2 % len(OTHER)] + " " * (i % 3))
    return out


def test_ngram_proposer() -> None:
    p = NgramProposer(min_n=2, max_n=3, num_tokens=3)
    assert p.propose([1, 2, 3, 4, 5, 9, 1, 2, 3], limit=8) == [4, 5, 9]  # the 3-gram 1 2 3 matched
    assert p.propose([1, 2, 7, 7, 1, 2, 8, 5, 1, 2], limit=8) == [8, 5, 1]  # the latest occurrence wins
    assert p.propose([1, 2, 3, 4, 1, 2], limit=2) == [3, 4]
    assert p.propose([1, 2, 3, 4, 5], limit=8) == []
    assert p.propose([1, 2, 1, 2], limit=0) == []
    assert accepted_prefix([5, 6, 9], [5, 6]) == [5, 6, 9]  # both drafts and the bonus token
    assert accepted_prefix([5, 8, 9], [5, 6]) == [5, 8]  # the second draft rejected: the model's token


def _ctx(seed: int | None, **kw) -> TextContext:
    return TextContext(request_id=f"r{seed}", tokens=[1], max_length=8,
                       sampling_params=SamplingParams(temperature=1.0, seed=seed, **kw))


def test_rejection_rule_keeps_the_target_distribution() -> None:
    """Rows verifying a draft token emit tokens distributed as the target (softmax of the row), for a
    draft the target likes, one it dislikes, and one it rules out (top_k)."""
    torch.manual_seed(0)
    logits = torch.randn(1, 12) * 1.5
    probs = torch.softmax(logits, dim=-1)[0]
    n = 40_000
    for draft in (int(probs.argmax()), int(probs.argmin()), 3):
        sampler = Sampler(seed=draft + 1)
        ctxs = [_ctx(None) for _ in range(n)]
        out = sampler(logits.expand(n, -1).contiguous(), ctxs, drafts=[draft] * n).token_ids.tolist()
        counts = Counter(out)
        expected = probs * n
        chi2 = sum((counts.get(t, 0) - float(expected[t])) ** 2 / float(expected[t]) for t in range(12))
        assert chi2 < 35.0, (draft, chi2)  # df 11: p ~ 2e-4; a 2% shift of one token's mass gives > 100
    top = Sampler(seed=5)(logits, [_ctx(None, top_k=2)], drafts=[int(probs.argmin())]).token_ids.tolist()
    assert top[0] in torch.topk(probs, 2).indices.tolist()  # a draft outside top_k is never kept


@pytest.mark.parametrize("model", ["smollm2_gguf", "qwen_gguf"])
def test_greedy_outputs_equal_non_speculative(model: str, request: pytest.FixtureRequest) -> None:
    path = str(request.getfixturevalue(model))
    texts = prompts(64)
    sp = SamplingParams(temperature=0.0, max_new_tokens=24)
    results = {}
    for method in (None, "ngram"):
        llm = LLM(path, max_length=512, max_batch_size=64, speculative_method=method, num_speculative_tokens=4)
        batch = [o.token_ids for o in llm.generate(texts, sp, use_chat_template=True)]
        solo = [llm.generate([t], sp, use_chat_template=True)[0].token_ids for t in texts[:6]]
        results[method] = (batch, solo)
        kv = llm.engine.pipeline.kv_manager
        kv.check_invariants()
        assert kv.num_used_blocks == 0
        if method:
            stats = llm.engine.speculator.stats
            assert stats.accepted_tokens > 0.3 * stats.drafted_tokens > 0, stats.to_dict()
    (batch, solo), (spec_batch, spec_solo) = results[None], results["ngram"]
    assert spec_solo == solo
    assert sum(a == b for a, b in zip(spec_batch, batch)) == len(batch), \
        [i for i, (a, b) in enumerate(zip(spec_batch, batch)) if a != b]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A random 2-layer Llama with a 512-token vocabulary (SmolLM2's tokenizer decodes its ids): sampling
    thousands of requests stays cheap."""
    from tiny_checkpoints import write_tiny_checkpoint
    from transformers import AutoTokenizer, LlamaConfig

    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, initializer_range=0.1)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("spec_tiny"), tokenizer, config, seed=3)


def _tiny(path: Path, method: str | None, **kw) -> LLM:
    # a full batch of short prompts prefills in one step, so the next steps decode only (and draft)
    return LLM(str(path), max_length=96, max_batch_size=256, max_batch_input_tokens=8192, speculative_method=method,
               num_speculative_tokens=3, ngram_prompt_lookup_min=1, **kw)


def test_sampled_distribution_matches_non_speculative(tiny_model: Path) -> None:
    """Two-sample chi-square on (first, second) token pairs at temperature 1 with top_k 4: speculative runs
    (a one-token draft verified by rejection sampling at the second token) against plain sampling. A bias
    on two tokens X and Y, which the prompt alternates, makes the first token X or Y most of the time, so
    the second is drafted (Y after X, X after Y) and both accepted and rejected drafts occur."""
    x, y = 17, 402
    prompt = [195, 88, 303] + [x, y] * 6
    bias = {x: 5.0, y: 5.0}
    n = 6_000
    counts = {}
    stats = None
    for method in (None, "ngram"):
        llm = _tiny(tiny_model, method)
        llm.engine.pipeline.sampler = Sampler(seed=11)
        # three tokens: the second step may then draft one token (the third is its bonus)
        sp = SamplingParams(temperature=1.0, top_k=4, max_new_tokens=3, ignore_eos=True, logit_bias=bias)
        # batches of 250: each prefills in one step, then decodes alone (drafts only run in decode-only steps)
        outs = [o for _ in range(n // 250) for o in llm.generate([prompt] * 250, sp)]
        counts[method] = Counter(tuple(o.token_ids[:2]) for o in outs)
        if method:
            stats = llm.engine.speculator.stats
    assert stats is not None and stats.num_drafts > n // 2 and 0.05 < stats.acceptance_rate < 0.95, stats.to_dict()
    plain, spec = counts[None], counts["ngram"]
    keys = [k for k in set(plain) | set(spec) if plain[k] + spec[k] >= 20]
    chi2 = sum((plain[k] - spec[k]) ** 2 / (plain[k] + spec[k]) for k in keys)
    df = len(keys) - 1
    assert df >= 3 and chi2 < df + 4 * (2 * df) ** 0.5, (chi2, df)  # ~ 4 sigma of a chi-square with df degrees


def test_pages_stay_exact_under_drafts_and_preemption(tiny_model: Path) -> None:
    """A small cache forces preemption while requests carry drafts: after every step the page ref counts
    equal their owners; at the end nothing is held and outputs equal the non-speculative ones."""
    drafted: list[int] = []
    preempted: list[int] = []

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(lengths=st.lists(st.integers(4, 40), min_size=3, max_size=10), max_new=st.integers(4, 30),
           pages=st.integers(12, 24))
    def run(lengths: list[int], max_new: int, pages: int) -> None:
        base = [17, 402, 88, 17, 402, 88, 303]
        token_prompts = [(base * 8)[i % 3: i % 3 + n] for i, n in enumerate(lengths)]
        sp = SamplingParams(temperature=0.0, max_new_tokens=max_new)
        outputs = {}
        for method in (None, "ngram"):
            llm = _tiny(tiny_model, method, kv_cache={"kv_cache_num_pages": pages, "kv_cache_page_size": 8})
            engine, kv = llm.engine, llm.engine.pipeline.kv_manager
            contexts = [engine.add_request(TextGenerationRequest(request_id=RequestID(), model_name="m", prompt=p,
                                                                 sampling_params=sp)) for p in token_prompts]
            while engine.has_unfinished:
                engine.step()
                kv.check_invariants()
            assert kv.num_used_blocks == 0
            if method:
                drafted.append(engine.speculator.stats.drafted_tokens)
                preempted.append(engine.scheduler.num_preemptions)
            outputs[method] = [c.output_token_ids for c in contexts]
        assert outputs["ngram"] == outputs[None]

    run()
    assert sum(drafted) > 100 and sum(1 for d in drafted if d) >= len(drafted) // 2, drafted
    assert any(preempted), preempted


@pytest.fixture(scope="module")
def tiny_smollm2_vocab(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer: a (poor) draft model for SmolLM2."""
    from tiny_checkpoints import write_tiny_llama

    return write_tiny_llama(tmp_path_factory.mktemp("draft_tiny"), smollm2_gguf, seed=5, max_positions=1024)


@pytest.mark.parametrize("model", ["smollm2_gguf", "qwen_gguf"])
def test_standalone_draft_model_is_exact(model: str, request: pytest.FixtureRequest) -> None:
    """Greedy outputs with a draft model equal plain decoding: SmolLM2 drafted by a tiny random model of its
    vocabulary (most drafts rejected), Qwen drafted by itself (most accepted); both caches end empty."""
    path = str(request.getfixturevalue(model))
    draft = str(request.getfixturevalue("tiny_smollm2_vocab")) if model == "smollm2_gguf" else path
    texts = prompts(12)
    sp = SamplingParams(temperature=0.0, max_new_tokens=16)
    results = {}
    for method in (None, "standalone"):
        llm = LLM(path, max_length=512, max_batch_size=16, speculative_method=method,
                  draft_model=draft if method else None)
        batch = [o.token_ids for o in llm.generate(texts, sp, use_chat_template=True)]
        solo = [llm.generate([t], sp, use_chat_template=True)[0].token_ids for t in texts[:2]]
        results[method] = (batch, solo)
        assert llm.engine.pipeline.kv_manager.num_used_blocks == 0
        if method:
            speculator = llm.engine.speculator
            assert speculator.draft_model.kv.num_used_blocks == 0 and speculator.stats.drafted_tokens > 0
            if draft == path:
                assert speculator.stats.acceptance_rate > 0.8, speculator.stats.to_dict()
    assert results["standalone"] == results[None]


def test_draft_model_with_another_vocabulary_is_refused(smollm2_gguf: Path, qwen_gguf: Path) -> None:
    from maxcli.interfaces import InputError

    with pytest.raises(InputError, match="must share the target's tokenizer"):
        LLM(str(smollm2_gguf), max_length=256, speculative_method="standalone", draft_model=str(qwen_gguf))
