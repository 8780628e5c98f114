"""Sampler: greedy, filters vs transformers' warpers, penalties vs RepetitionPenaltyLogitsProcessor,
seeded reproducibility across batches, min_new_tokens masking, logprobs."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from maxcli.engine import Sampler, prompt_logprobs
from maxcli.engine.sampler import apply_min_p, apply_penalties, apply_top_k, apply_top_p

from .helpers import make_ctx

V = 32


def logits_for(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_rows_take_argmax() -> None:
    x = logits_for(3)
    ctxs = [make_ctx([1], temperature=0.0), make_ctx([1], top_k=1, temperature=0.7), make_ctx([1], temperature=0.0)]
    out = Sampler(seed=0)(x, ctxs)
    assert out.token_ids.tolist() == x.argmax(-1).tolist()
    assert out.logprobs == [None, None, None]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_top_k_matches_transformers(k: int) -> None:
    x = logits_for(4)
    ours = apply_top_k(x, torch.full((4, 1), k))
    torch.testing.assert_close(ours, TopKLogitsWarper(top_k=k)(None, x.clone()))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_top_p_matches_transformers(p: float) -> None:
    x = logits_for(4)
    ours = apply_top_p(x, torch.full((4, 1), p))
    torch.testing.assert_close(ours, TopPLogitsWarper(top_p=p)(None, x.clone()))


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_min_p_matches_transformers(p: float) -> None:
    x = logits_for(4)
    ours = apply_min_p(x, torch.full((4, 1), p))
    torch.testing.assert_close(ours, MinPLogitsWarper(min_p=p)(None, x.clone()))


def test_sampled_tokens_stay_inside_the_filters() -> None:
    x = logits_for(1).expand(200, V).contiguous()
    top3 = set(x[0].topk(3).indices.tolist())
    out = Sampler(seed=1)(x, [make_ctx([1], temperature=1.5, top_k=3) for _ in range(200)])
    assert set(out.token_ids.tolist()) <= top3 and len(set(out.token_ids.tolist())) > 1
    probs = torch.softmax(x[0], -1)
    nucleus = apply_top_p(x[:1], torch.tensor([[0.6]]))[0].isfinite()
    out = Sampler(seed=2)(x, [make_ctx([1], top_p=0.6) for _ in range(200)])
    assert all(nucleus[t] for t in out.token_ids.tolist())
    floor = 0.2 * probs.max()
    out = Sampler(seed=3)(x, [make_ctx([1], min_p=0.2) for _ in range(200)])
    assert all(probs[t] >= floor for t in out.token_ids.tolist())


def test_exponential_race_follows_the_softmax_distribution() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    n = 4000
    out = Sampler(seed=4)(logits.expand(n, 4).contiguous(), [make_ctx([1]) for _ in range(n)])
    freq = torch.bincount(out.token_ids, minlength=4).float() / n
    torch.testing.assert_close(freq, torch.softmax(logits, -1), atol=0.03, rtol=0)


def test_repetition_penalty_matches_transformers() -> None:
    x = logits_for(2)
    prompts, outputs = [[1, 2, 3, 3], [4, 5]], [[6, 1], [7, 7, 8]]
    ctxs = []
    for prompt, gen, rp in zip(prompts, outputs, (1.3, 0.8)):
        ctx = make_ctx(prompt, repetition_penalty=rp)
        for t in gen:
            ctx.append_token(t)
        ctxs.append(ctx)
    ours = x.clone()
    apply_penalties(ours, ctxs)
    for i, (ctx, rp) in enumerate(zip(ctxs, (1.3, 0.8))):
        ref = RepetitionPenaltyLogitsProcessor(penalty=rp)(torch.tensor([ctx.tokens]), x[i : i + 1].clone())
        torch.testing.assert_close(ours[i : i + 1], ref)


def test_a_vanishing_repetition_penalty_keeps_scores_finite() -> None:
    """5e-324 passes `> 0` but is 0 in float32: seen tokens' scores would be infinite and softmax NaN."""
    x = logits_for(1)
    ctx = make_ctx([1, 2, 3], repetition_penalty=5e-324, logprobs=2, temperature=0.0)
    ours = x.clone()
    apply_penalties(ours, [ctx])
    assert torch.isfinite(ours).all()
    out = Sampler(seed=0)(x, [ctx])
    lp, top = out.logprobs[0]  # type: ignore[misc]
    assert all(map(lambda v: v == v and abs(v) < float("inf"), [lp, *top.values()]))


def test_frequency_and_presence_count_output_tokens_only() -> None:
    x = logits_for(1)
    ctx = make_ctx([3, 3, 4], frequency_penalty=0.5, presence_penalty=0.25)
    ours = x.clone()
    apply_penalties(ours, [ctx])  # no output yet: prompt tokens are not penalized
    torch.testing.assert_close(ours, x)
    for t in (4, 5, 5, 5):
        ctx.append_token(t)
    ours = x.clone()
    apply_penalties(ours, [ctx])  # incremental update of the cached counts
    expected = x.clone()
    expected[0, 4] -= 0.5 * 1 + 0.25
    expected[0, 5] -= 0.5 * 3 + 0.25
    torch.testing.assert_close(ours, expected)


def test_penalties_change_the_greedy_choice() -> None:
    x = torch.zeros(1, V)
    x[0, 9], x[0, 10] = 2.0, 1.9
    ctx = make_ctx([9], temperature=0.0, repetition_penalty=1.2)
    assert Sampler()(x, [ctx]).token_ids.tolist() == [10]
    assert Sampler()(x, [make_ctx([9], temperature=0.0)]).token_ids.tolist() == [9]


def test_seeded_requests_repeat_whatever_the_batch() -> None:
    def run(batch_before: int, batch_after: int) -> list[int]:
        target = make_ctx([1, 2], temperature=1.0, seed=1234)
        sampler = Sampler()
        tokens = []
        for step in range(6):
            others = [make_ctx([3], temperature=1.0) for _ in range(batch_before)]
            others_after = [make_ctx([3], temperature=0.9, seed=step) for _ in range(batch_after)]
            ctxs = others + [target] + others_after
            x = logits_for(len(ctxs), seed=100 + step)
            x[batch_before] = logits_for(1, seed=step)[0]  # the target always sees the same logits
            tok = int(sampler(x, ctxs).token_ids[batch_before])
            target.append_token(tok)
            tokens.append(tok)
        return tokens

    alone = run(0, 0)
    assert run(3, 2) == alone and run(1, 5) == alone
    assert len(set(alone)) > 1


def test_min_new_tokens_masks_eos_and_stop_ids() -> None:
    x = torch.zeros(3, V)
    x[:, 0] = 50.0  # eos
    x[:, 5] = 40.0  # stop token
    x[:, 7] = 30.0
    ctxs = [
        make_ctx([1], eos=(0,), temperature=0.0, min_new_tokens=2, stop_token_ids=[5]),
        make_ctx([1], eos=(0,), temperature=0.0, min_new_tokens=2, ignore_eos=True),
        make_ctx([1], eos=(0,), temperature=0.0, min_new_tokens=1),
    ]
    ctxs[2].append_token(7)  # min_new_tokens reached: nothing masked
    assert Sampler()(x, ctxs).token_ids.tolist() == [7, 0, 0]
    assert x[0, 0] == 50.0  # the caller's logits are untouched


def test_logprobs_are_raw_log_softmax() -> None:
    x = logits_for(3)
    ctxs = [
        make_ctx([1, 2], logprobs=3, repetition_penalty=1.5),
        make_ctx([1], temperature=0.0),
        make_ctx([1], logprobs=0, temperature=0.0),
    ]
    out = Sampler(seed=0)(x, ctxs)
    ref = torch.log_softmax(x, -1)
    lp0, top0 = out.logprobs[0]  # type: ignore[misc]
    assert lp0 == pytest.approx(ref[0, out.token_ids[0]].item(), abs=1e-5)
    vals, ids = ref[0].topk(3)
    assert list(top0) == ids.tolist() and list(top0.values()) == pytest.approx(vals.tolist(), abs=1e-5)
    assert out.logprobs[1] is None
    lp2, top2 = out.logprobs[2]  # type: ignore[misc]
    assert lp2 == pytest.approx(ref[2].max().item(), abs=1e-5) and top2 == {}


def test_prompt_logprobs_score_each_next_token() -> None:
    prompt = [3, 8, 1, 30]
    x = logits_for(len(prompt))
    res = prompt_logprobs(x, prompt, num_top=2)
    ref = torch.log_softmax(x, -1)
    assert res.token_log_probabilities == pytest.approx([ref[i, prompt[i + 1]].item() for i in range(3)], abs=1e-5)
    assert [list(d) for d in res.top_log_probabilities] == ref[:3].topk(2).indices.tolist()
    assert prompt_logprobs(x[:1], [5]).token_log_probabilities == []
    with pytest.raises(ValueError, match="need logits for 3"):
        prompt_logprobs(x[:2], prompt)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expected logits \[2, vocab\]"):
        Sampler()(logits_for(3), [make_ctx([1]), make_ctx([2])])
