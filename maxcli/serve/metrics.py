"""Prometheus metrics for /metrics: request counts by route and status, latency histograms, and engine
gauges (queue, running requests, KV pages, prefix-cache hit rate, preemptions) read from the engine
thread's latest EngineStats snapshot at scrape time (no locks: the snapshot is replaced atomically)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from maxcli.engine.structured import CONSTRAINT_KEY
from maxcli.pipelines.core import TextContext
from maxcli.serve.driver import EngineStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_MASK_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


ReplicaStats = list[tuple[EngineStats, int]]  # (engine snapshot, jobs routed) per data-parallel replica


class _EngineCollector(Collector):
    """Engine gauges labelled by replica (replica="0" only without data parallelism)."""

    def __init__(self, stats: Callable[[], ReplicaStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        replicas = self._stats() or [(EngineStats(), 0)]
        gauges = (
            ("maxcli_num_requests_waiting", "Requests waiting for a batch slot.", lambda s: s.num_waiting),
            ("maxcli_num_requests_running", "Requests in the running batch.", lambda s: s.num_running),
            ("maxcli_kv_cache_used_pages", "KV-cache pages referenced by live requests.", lambda s: s.kv_used_pages),
            ("maxcli_kv_cache_total_pages", "KV-cache pages in the pool.", lambda s: s.kv_total_pages),
            ("maxcli_prefix_cache_hit_rate", "Fraction of queried prompt pages found in the prefix cache.",
             lambda s: s.prefix_cache_hit_rate),
        )
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=["replica"])
            for i, (s, _) in enumerate(replicas):
                family.add_metric([str(i)], value(s))
            yield family
        preemptions = CounterMetricFamily("maxcli_num_preemptions", "Requests preempted (recomputed later).",
                                          labels=["replica"])
        routed = CounterMetricFamily("maxcli_replica_requests", "Jobs routed to each engine replica.", labels=["replica"])
        for i, (s, n) in enumerate(replicas):
            preemptions.add_metric([str(i)], s.num_preemptions)
            routed.add_metric([str(i)], n)
        yield preemptions
        yield routed
        drafted = CounterMetricFamily("maxcli_spec_decode_num_draft_tokens", "Tokens drafted by speculative decoding.",
                                      labels=["replica"])
        accepted = CounterMetricFamily("maxcli_spec_decode_num_accepted_tokens",
                                       "Drafted tokens the model accepted.", labels=["replica"])
        per_position = GaugeMetricFamily("maxcli_spec_decode_acceptance_rate_per_position",
                                         "Fraction of drafts whose token at this position was accepted.",
                                         labels=["replica", "position"])
        for i, (s, _) in enumerate(replicas):
            drafted.add_metric([str(i)], s.spec_drafted_tokens)
            accepted.add_metric([str(i)], s.spec_accepted_tokens)
            for pos, (d, a) in enumerate(zip(s.spec_drafted_per_position, s.spec_accepted_per_position)):
                per_position.add_metric([str(i), str(pos)], a / d if d else 0.0)
        yield drafted
        yield accepted
        yield per_position
        resident = GaugeMetricFamily("maxcli_lora_resident_adapters", "LoRA adapters resident in slots.", labels=["replica"])
        loads = CounterMetricFamily("maxcli_lora_loads", "LoRA adapters placed in a slot (startup, on demand).",
                                    labels=["replica"])
        evictions = CounterMetricFamily("maxcli_lora_evictions", "LoRA adapters evicted from a slot for another.",
                                        labels=["replica"])
        per_adapter = CounterMetricFamily("maxcli_lora_requests", "Requests run with each LoRA adapter.",
                                          labels=["replica", "adapter"])
        for i, (s, _) in enumerate(replicas):
            resident.add_metric([str(i)], s.lora_resident)
            loads.add_metric([str(i)], s.lora_loads)
            evictions.add_metric([str(i)], s.lora_evictions)
            for name, n in s.lora_requests:
                per_adapter.add_metric([str(i), name], n)
        yield resident
        yield loads
        yield evictions
        yield per_adapter


class ServerMetrics:
    """The server's own registry (not the process-global one), so several apps never collide."""

    def __init__(self, stats: Callable[[], ReplicaStats]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("maxcli_requests", "HTTP requests by route and status code.", ["route", "status"], registry=r)
        self.ttft = Histogram("maxcli_time_to_first_token_seconds", "Time from arrival to the first output token.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("maxcli_inter_token_latency_seconds", "Time between consecutive output tokens.",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("maxcli_time_per_output_token_seconds", "Decode time per output token of a request.",
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("maxcli_e2e_request_latency_seconds", "Time from arrival to the last token.",
                             buckets=_E2E_BUCKETS, registry=r)
        self.prompt_tokens = Counter("maxcli_prompt_tokens", "Prompt tokens of finished requests.", registry=r)
        self.generation_tokens = Counter("maxcli_generation_tokens", "Output tokens of finished requests.", registry=r)
        self.constrained = Counter("maxcli_structured_output_requests", "Finished requests whose output a grammar "
                                   "constrained, by kind (json_schema, json_object, regex, choice, grammar).",
                                   ["kind"], registry=r)
        self.mask_time = Histogram("maxcli_structured_output_mask_seconds_per_token",
                                   "Grammar mask time per output token of a constrained request (computed while "
                                   "the forward pass runs).", buckets=_MASK_BUCKETS, registry=r)
        r.register(_EngineCollector(stats))

    # LatencyObserver, called from the engine thread (prometheus_client metrics are thread-safe)
    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_inter_token(self, seconds: float) -> None:
        self.itl.observe(seconds)

    def observe_finished(self, context: TextContext, e2e_s: float, first_token_s: float | None) -> None:
        self.e2e.observe(e2e_s)
        n = context.num_output_tokens
        self.prompt_tokens.inc(context.prompt_len)
        self.generation_tokens.inc(n)
        if first_token_s is not None and n > 1:
            self.tpot.observe((e2e_s - first_token_s) / (n - 1))
        constraint = context.extra.get(CONSTRAINT_KEY)
        if constraint is not None:
            self.constrained.labels(kind=constraint.kind).inc()
            if constraint.mask_steps:
                self.mask_time.observe(constraint.mask_seconds / constraint.mask_steps)

    def count_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
