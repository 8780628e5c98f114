"""Randomized arrivals, prompt/output lengths, aborts and preemptions through the KV manager and
scheduler together, with a fake forward that writes (token id, position) into each K/V slot.

Checked after every rule: page accounting (no page owned twice, none lost), shared pages are hashed,
every computed position of a running request reads back its own token from the cache (so prefix
sharing never hands out wrong K/V), queue sizes, FCFS admission; at teardown all requests finish and
every page is released.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from maxcli.engine import Scheduler
from maxcli.interfaces import GenerationStatus, InputError
from maxcli.kv_cache import build_step_inputs
from maxcli.pipelines.core import TextContext

from .helpers import make_ctx, make_kv

PAGE = 4
EOS = 0
PREFIXES = [[], list(range(1, 9)), list(range(1, 13)), [5, 5, 5, 5]]


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.kv = make_kv(num_blocks=8, page_size=PAGE, head_dim=2)
        self.sched = Scheduler(self.kv, max_batch_size=3, max_batch_input_tokens=10, max_seq_len=32)
        self.contexts: list[TextContext] = []  # arrival order
        self.admitted: list[str] = []  # first-admission order
        self.next_id = 0

    @rule(
        prefix=st.sampled_from(PREFIXES),
        extra=st.lists(st.integers(1, 40), max_size=12),
        max_new=st.integers(0, 20),
        max_length=st.sampled_from([20, 32]),
    )
    def add(self, prefix: list[int], extra: list[int], max_new: int, max_length: int) -> None:
        tokens = (prefix + extra) or [7]
        ctx = make_ctx(tokens, f"r{self.next_id}", max_length=max_length, eos=(EOS,), max_new_tokens=max_new)
        self.next_id += 1
        if len(tokens) > max_length:
            with pytest.raises(InputError, match="exceeds the context limit"):
                self.sched.add(ctx)
            assert not self.kv.contains(ctx.request_id)
            return
        self.sched.add(ctx)
        self.contexts.append(ctx)

    @rule(data=st.data(), num_steps=st.integers(1, 8))
    def run_steps(self, data: st.DataObject, num_steps: int) -> None:
        for _ in range(num_steps):
            self._step(data)
            self.pages_are_accounted()
            self.cache_holds_each_requests_tokens()

    def _step(self, data: st.DataObject) -> None:
        out = self.sched.schedule()
        assert out.num_tokens <= self.sched.max_batch_input_tokens
        assert len(out.scheduled) <= self.sched.max_batch_size
        assert len({c.request_id for c, _ in out.scheduled}) == len(out.scheduled)
        if out.is_empty:
            assert not self.sched.has_unfinished
            return
        for ctx, _ in out.scheduled:
            if ctx.request_id not in self.admitted:
                self.admitted.append(ctx.request_id)
        inputs = build_step_inputs(self.kv, out.scheduled)
        k_cache, _ = self.kv.layer_caches(0)
        flat = k_cache.view(-1, 2)  # one KV head of dim 2: (token id, position)
        flat[inputs.attention.slot_mapping, 0] = inputs.input_ids.float()
        flat[inputs.attention.slot_mapping, 1] = inputs.positions.float()
        sampled = {c.request_id: data.draw(st.integers(0, 40)) for c in inputs.sample_contexts}
        for ctx in self.sched.postprocess(out, sampled):
            assert ctx.is_done and not self.kv.contains(ctx.request_id)

    @precondition(lambda self: self.sched.has_unfinished)
    @rule(data=st.data())
    def abort(self, data: st.DataObject) -> None:
        live = [c for c in self.contexts if not c.is_done]
        ctx = data.draw(st.sampled_from(live))
        self.sched.abort(ctx.request_id)
        assert ctx.status is GenerationStatus.CANCELLED and not self.kv.contains(ctx.request_id)

    @invariant()
    def pages_are_accounted(self) -> None:
        kv = self.kv
        kv.check_invariants()
        assert kv.num_free_blocks + kv.num_used_blocks + kv.num_cached_blocks == kv.total_num_pages
        owners: dict[int, int] = {}
        for ctx in self.sched.running:
            for page in kv.block_table(ctx.request_id):
                owners[page] = owners.get(page, 0) + 1
        for page, n in owners.items():
            if n > 1:
                assert kv.pool.block_hash(page) is not None, f"page {page} shared without a hash"

    @invariant()
    def cache_holds_each_requests_tokens(self) -> None:
        k_cache, _ = self.kv.layer_caches(0)
        flat = k_cache.view(-1, 2)
        for ctx in self.sched.running:
            for pos in range(ctx.num_computed_tokens):
                slot = self.kv.slot(ctx.request_id, pos)
                assert flat[slot].tolist() == [float(ctx.tokens[pos]), float(pos)], (ctx.request_id, pos)

    @invariant()
    def queues_are_consistent(self) -> None:
        live = {c.request_id for c in self.contexts if not c.is_done}
        waiting = [c.request_id for c in self.sched.waiting]
        running = [c.request_id for c in self.sched.running]
        assert len(waiting) + len(running) == len(live) and set(waiting) | set(running) == live
        assert len(running) <= self.sched.max_batch_size
        assert all(self.kv.contains(rid) for rid in live)
        arrival = {c.request_id: i for i, c in enumerate(self.contexts)}
        assert self.admitted == sorted(self.admitted, key=arrival.__getitem__), "admission broke FCFS"

    def teardown(self) -> None:
        for _ in range(2000):
            if not self.sched.has_unfinished:
                break
            out = self.sched.schedule()
            inputs = build_step_inputs(self.kv, out.scheduled)
            self.sched.postprocess(out, {c.request_id: 1 for c in inputs.sample_contexts})
        assert not self.sched.has_unfinished
        assert all(c.is_done for c in self.contexts)
        for c in self.contexts:
            if c.status is not GenerationStatus.CANCELLED:
                assert c.num_output_tokens <= c.max_new_tokens
                assert c.num_computed_tokens == len(c.tokens) - (1 if c.num_output_tokens else 0)
        self.kv.check_invariants()
        assert self.kv.num_used_blocks == 0
        assert self.kv.num_free_blocks + self.kv.num_cached_blocks == self.kv.total_num_pages


EngineMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=40, deadline=None)
TestEngineStateMachine = EngineMachine.TestCase


def test_preemption_happens_under_this_load() -> None:
    """The machine's page pool is small enough that preemption paths are exercised, not just possible."""
    kv = make_kv(num_blocks=12, page_size=PAGE)
    sched = Scheduler(kv, max_batch_size=3, max_batch_input_tokens=10, max_seq_len=32)
    for i in range(3):
        sched.add(make_ctx([i + 1] * 14, f"p{i}", max_length=32, max_new_tokens=16))
    while sched.has_unfinished:
        out = sched.schedule()
        inputs = build_step_inputs(kv, out.scheduled)
        sched.postprocess(out, {c.request_id: 1 for c in inputs.sample_contexts})
        kv.check_invariants()
    assert sched.num_preemptions > 0
    assert kv.num_used_blocks == 0
