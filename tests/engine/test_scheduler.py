"""Scheduler: decode-first batching, chunked prefill, preemption, stop conditions, aborts."""

from __future__ import annotations

import pytest

from maxcli.engine import Scheduler
from maxcli.interfaces import GenerationStatus, InputError

from .helpers import make_ctx, make_kv


def step(sched: Scheduler, tokens: dict[str, int] | None = None, default: int = 1):  # type: ignore[no-untyped-def]
    """One engine step with fake sampled tokens: (scheduled [(rid, n)], finished rids, output)."""
    out = sched.schedule()
    sampled = {}
    for ctx, n in out.scheduled:
        if ctx.num_computed_tokens + n == len(ctx.tokens):
            sampled[ctx.request_id] = (tokens or {}).get(ctx.request_id, default)
    finished = sched.postprocess(out, sampled)
    return [(c.request_id, n) for c, n in out.scheduled], [c.request_id for c in finished], out


def test_decode_first_then_chunked_prefill_in_order() -> None:
    sched = Scheduler(make_kv(64, page_size=4), max_batch_size=4, max_batch_input_tokens=8, max_seq_len=64)
    a = make_ctx([1, 2, 3], "a")
    sched.add(a)
    assert step(sched)[0] == [("a", 3)]
    sched.add(make_ctx(list(range(10, 30)), "b"))  # 20-token prompt, budget 8
    sched.add(make_ctx([7, 7], "c"))
    assert step(sched)[0] == [("a", 1), ("b", 7)]
    assert step(sched)[0] == [("a", 1), ("b", 7)]  # b keeps its place; c must wait behind it
    assert step(sched)[0] == [("a", 1), ("b", 6), ("c", 1)]
    assert step(sched)[0] == [("a", 1), ("b", 1), ("c", 1)]  # c's last prompt token rides with decodes
    assert sched.get("b").num_output_tokens == 2  # type: ignore[union-attr]


def test_max_batch_size_and_budget() -> None:
    sched = Scheduler(make_kv(64), max_batch_size=2, max_batch_input_tokens=100, max_seq_len=64)
    for rid in "abc":
        sched.add(make_ctx([1, 2], rid))
    scheduled, _, _ = step(sched)
    assert scheduled == [("a", 2), ("b", 2)]
    assert (sched.num_running, sched.num_waiting) == (2, 1)


def test_preempts_newest_and_requeues_it_first() -> None:
    kv = make_kv(6, page_size=2)
    sched = Scheduler(kv, max_batch_size=4, max_batch_input_tokens=64, max_seq_len=12)
    a, b = make_ctx([1, 2, 3, 4, 5], "a"), make_ctx([6, 7, 8, 9, 10], "b")
    sched.add(a)
    sched.add(b)
    sched.add(make_ctx([11], "late"))
    assert step(sched)[0] == [("a", 5), ("b", 5)]  # 6 pages used; "late" cannot get one
    assert step(sched)[0] == [("a", 1), ("b", 1)]
    scheduled, _, out = step(sched)  # a needs a 4th page: b (newest) is preempted
    assert scheduled == [("a", 1)] and out.preempted == [b]
    assert sched.num_preemptions == 1 and b.num_preemptions == 1 and b.num_computed_tokens == 0
    assert [c.request_id for c in sched.waiting] == ["b", "late"]
    assert not kv.block_table("b")
    kv.check_invariants()
    while sched.has_unfinished:
        step(sched)
    assert b.num_output_tokens == a.num_output_tokens == 7  # both ran to the 12-token limit
    assert b.status is GenerationStatus.MAXIMUM_LENGTH
    assert kv.num_used_blocks == 0


def test_prefix_cache_through_scheduler() -> None:
    kv = make_kv(32, page_size=4)
    sched = Scheduler(kv, max_batch_size=4, max_batch_input_tokens=64, max_seq_len=64)
    shared = list(range(100, 112))
    sched.add(make_ctx(shared + [1], "a", max_new_tokens=1))
    step(sched)
    b = make_ctx(shared + [2, 3], "b", max_new_tokens=1)
    sched.add(b)
    assert step(sched)[0] == [("b", 2)]
    assert b.num_cached_tokens == 12


@pytest.mark.parametrize(
    "kwargs, sampled, expect_status, expect_len",
    [
        ({}, [5, 9, 2], GenerationStatus.END_OF_SEQUENCE, 2),  # eos 9
        ({"ignore_eos": True, "max_new_tokens": 3}, [9, 9, 9], GenerationStatus.MAXIMUM_LENGTH, 3),
        ({"min_new_tokens": 2}, [9, 9, 4], GenerationStatus.END_OF_SEQUENCE, 2),
        ({"stop_token_ids": [4]}, [5, 4, 5], GenerationStatus.END_OF_SEQUENCE, 2),
        ({"max_new_tokens": 2}, [5, 6, 7], GenerationStatus.MAXIMUM_LENGTH, 2),
        ({"max_new_tokens": 0}, [5], GenerationStatus.MAXIMUM_LENGTH, 0),
        ({"max_length": 5}, [5, 6, 7], GenerationStatus.MAXIMUM_LENGTH, 2),  # context limit
    ],
)
def test_stop_conditions(kwargs: dict, sampled: list[int], expect_status: GenerationStatus, expect_len: int) -> None:
    kv = make_kv(16)
    sched = Scheduler(kv, max_batch_size=2, max_batch_input_tokens=16, max_seq_len=32)
    ctx = make_ctx([1, 2, 3], "r", eos=(9,), **kwargs)
    sched.add(ctx)
    for tok in sampled:
        if not sched.has_unfinished:
            break
        step(sched, {"r": tok})
    assert ctx.status is expect_status and ctx.num_output_tokens == expect_len
    assert not kv.contains("r") and kv.num_used_blocks == 0


def test_abort_and_finish_free_pages_at_once() -> None:
    kv = make_kv(16)
    sched = Scheduler(kv, max_batch_size=1, max_batch_input_tokens=16, max_seq_len=32)
    run, wait = make_ctx([1, 2, 3], "run"), make_ctx([4], "wait")
    sched.add(run)
    sched.add(wait)
    out = sched.schedule()
    assert kv.num_used_blocks == 1
    sched.abort("run")
    assert run.status is GenerationStatus.CANCELLED and kv.num_used_blocks == 0
    assert sched.postprocess(out, {"run": 5}) == []  # aborted mid-step: ignored
    assert run.num_output_tokens == 0
    sched.finish("wait", GenerationStatus.END_OF_SEQUENCE)  # e.g. a stop string seen by the detokenizer
    assert not sched.has_unfinished and not kv.contains("wait")
    sched.abort("unknown")  # ignored
    with pytest.raises(ValueError, match="final status"):
        sched.finish("x", GenerationStatus.ACTIVE)


def test_bad_requests_and_configs() -> None:
    kv = make_kv(4, page_size=4)
    with pytest.raises(ValueError, match="needs 5 KV pages"):
        Scheduler(kv, max_batch_size=1, max_batch_input_tokens=8, max_seq_len=20)
    with pytest.raises(ValueError, match="max_batch_size"):
        Scheduler(kv, max_batch_size=0, max_batch_input_tokens=8, max_seq_len=8)
    sched = Scheduler(kv, max_batch_size=1, max_batch_input_tokens=8, max_seq_len=16)
    with pytest.raises(InputError, match="exceeds the context limit of 16"):
        sched.add(make_ctx(list(range(17))))
    with pytest.raises(InputError, match="empty prompt"):
        sched.add(make_ctx([]))
    sched.add(make_ctx([1], "dup"))
    with pytest.raises(InputError, match="already scheduled"):
        sched.add(make_ctx([1], "dup"))
    out = sched.schedule()
    with pytest.raises(ValueError, match="no token was sampled"):
        sched.postprocess(out, {})
