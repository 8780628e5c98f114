"""EngineDriver: one background thread owns the LLMEngine; the asyncio server talks to it by messages.

Requests reach the thread through a thread-safe command queue (add / abort); every output goes back to
the submitting coroutine's asyncio.Queue through loop.call_soon_threadsafe. Invariants:
- only the engine thread touches the engine (tokenizing new requests included), so no engine state
  is ever shared across threads;
- each added request's sink gets exactly one Accepted or Rejected message, then its RequestOutputs, the
  last one with finished=True, unless it is aborted first (then nothing more);
- an abort frees the request's KV pages before the thread runs another step.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from maxcli.engine.engine import LLMEngine, RequestOutput
from maxcli.interfaces import RequestID, TextGenerationRequest
from maxcli.pipelines.core import TextContext

logger = logging.getLogger("maxcli.serve")

IDLE_WAIT_S = 0.5  # how long the idle thread blocks on the command queue before re-checking for stop


@dataclass(frozen=True)
class EngineStats:
    """A snapshot published by the engine thread after each step (read lock-free by /metrics)."""

    num_waiting: int = 0
    num_running: int = 0
    kv_used_pages: int = 0
    kv_total_pages: int = 0
    prefix_cache_hit_rate: float = 0.0
    num_preemptions: int = 0
    # speculative decoding (all zero when it is off): tokens drafted and accepted, per draft position
    spec_drafted_tokens: int = 0
    spec_accepted_tokens: int = 0
    spec_drafted_per_position: tuple[int, ...] = ()
    spec_accepted_per_position: tuple[int, ...] = ()
    # LoRA (all zero without adapters): resident adapters, loads and evictions, requests per adapter
    lora_resident: int = 0
    lora_loads: int = 0
    lora_evictions: int = 0
    lora_requests: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Accepted:
    context: TextContext


@dataclass(frozen=True)
class Rejected:
    error: Exception  # InputError for bad input; anything else is a server fault


class LatencyObserver(Protocol):
    def observe_first_token(self, seconds: float) -> None: ...
    def observe_inter_token(self, seconds: float) -> None: ...
    def observe_finished(self, context: TextContext, e2e_s: float, first_token_s: float | None) -> None: ...


class Sink:
    """Where one HTTP request's messages go: (tag, message) pairs on its event loop's queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    def put(self, tag: int, message: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (tag, message))
        except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening
            pass


@dataclass
class _Live:
    sink: Sink
    tag: int
    context: TextContext
    submitted: float
    first_token: float | None = None
    last_token: float | None = None


@dataclass
class _Add:
    request: TextGenerationRequest
    sink: Sink
    tag: int
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Abort:
    request_id: RequestID


class EngineDriver:
    def __init__(self, engine: LLMEngine, observer: LatencyObserver | None = None) -> None:
        self.engine = engine
        self._observer = observer
        self._commands: queue.SimpleQueue[_Add | _Abort | None] = queue.SimpleQueue()
        self._live: dict[RequestID, _Live] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="maxcli-engine", daemon=True)
        self.stats = self._snapshot()
        self.num_unacknowledged = 0  # adds sent but not yet answered (touched by the event loop only)

    # -- called from the event loop -------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: TextGenerationRequest, sink: Sink, tag: int) -> None:
        self.num_unacknowledged += 1
        self._commands.put(_Add(request, sink, tag))

    def acknowledged(self) -> None:
        self.num_unacknowledged -= 1

    def abort(self, request_id: RequestID) -> None:
        self._commands.put(_Abort(request_id))

    @property
    def queue_length(self) -> int:
        """Requests waiting for a batch slot, including ones not yet seen by the engine thread."""
        return self.stats.num_waiting + self.num_unacknowledged

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._commands.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the engine thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._drain_commands(block=not self.engine.has_unfinished)
            self.stats = self._snapshot()  # before the step too: a step can take long, new arrivals count now
            if self.engine.has_unfinished and not self._stop.is_set():
                self._step()
                self.stats = self._snapshot()
        for rid in list(self._live):
            self.engine.abort(rid)
        self._live.clear()

    def _drain_commands(self, block: bool) -> None:
        try:
            command = self._commands.get(timeout=IDLE_WAIT_S) if block else self._commands.get_nowait()
        except queue.Empty:
            return
        while command is not None:
            if isinstance(command, _Add):
                self._add(command)
            else:
                self.engine.abort(command.request_id)
                self._live.pop(command.request_id, None)
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return

    def _add(self, command: _Add) -> None:
        try:
            context = self.engine.new_context(command.request)
            self.engine.add_context(context)
        except Exception as exc:  # InputError: the client's fault; anything else is reported as a 500
            command.sink.put(command.tag, Rejected(exc))
            return
        self._live[context.request_id] = _Live(command.sink, command.tag, context, command.submitted)
        command.sink.put(command.tag, Accepted(context))

    def _step(self) -> None:
        try:
            outputs = self.engine.step()
        except Exception as exc:  # an engine fault: fail every live request rather than hang them
            logger.exception("engine step failed; failing %d in-flight requests", len(self._live))
            for rid, live in list(self._live.items()):
                self.engine.abort(rid)
                live.sink.put(live.tag, Rejected(RuntimeError(f"engine failure: {type(exc).__name__}")))
            self._live.clear()
            return
        now = time.perf_counter()
        for out in outputs:
            live = self._live.get(out.request_id)
            if live is None:
                continue
            self._observe(live, out, now)
            live.sink.put(live.tag, out)
            if out.finished:
                del self._live[out.request_id]

    def _observe(self, live: _Live, out: RequestOutput, now: float) -> None:
        obs = self._observer
        if out.new_token_ids:
            if live.first_token is None:
                live.first_token = now
                if obs is not None:
                    obs.observe_first_token(now - live.submitted)
            elif obs is not None and live.last_token is not None:
                obs.observe_inter_token(now - live.last_token)
            live.last_token = now
        if out.finished and obs is not None:
            first = None if live.first_token is None else live.first_token - live.submitted
            obs.observe_finished(live.context, now - live.submitted, first)

    def _snapshot(self) -> EngineStats:
        sched, kv = self.engine.scheduler, self.engine.pipeline.kv_manager
        spec = self.engine.speculator.stats if self.engine.speculator is not None else None
        drafting = {} if spec is None else {
            "spec_drafted_tokens": spec.drafted_tokens, "spec_accepted_tokens": spec.accepted_tokens,
            "spec_drafted_per_position": tuple(spec.drafted_per_position),
            "spec_accepted_per_position": tuple(spec.accepted_per_position)}
        lora = self.engine.lora
        adapters = {} if lora is None else {
            "lora_resident": len(lora.resident), "lora_loads": lora.loads, "lora_evictions": lora.evictions,
            "lora_requests": tuple(sorted(lora.requests.items()))}
        return EngineStats(
            **drafting,
            **adapters,
            num_waiting=sched.num_waiting,
            num_running=sched.num_running,
            kv_used_pages=kv.num_used_blocks,
            kv_total_pages=kv.total_num_pages,
            prefix_cache_hit_rate=kv.prefix_cache_hit_rate,
            num_preemptions=sched.num_preemptions,
        )
