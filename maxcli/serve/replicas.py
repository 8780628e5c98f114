"""Data parallelism in the server: several engine replicas (each with its own weights, KV cache and engine
thread, each possibly tensor-parallel) behind one HTTP front, and the router that picks one per job.

Routing: a job goes to the replica that last served a prompt with the same opening characters (its
prefix-cache pages are likely still there), unless that replica's load exceeds the least-loaded one's by
more than `affinity_slack`; otherwise to the least-loaded replica. Load = running + waiting requests,
including submissions the engine thread has not seen yet. All of it runs on the event loop: no locks.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

from maxcli.serve.driver import EngineDriver

AFFINITY_CHARS = 256  # prompt characters that identify a shared prefix (a system prompt, a few-shot header)
AFFINITY_ENTRIES = 8192  # remembered prefixes (least recently used dropped first)


def replica_config(config: Any, index: int) -> Any:
    """Replica `index`'s config: its share of --devices on GPUs (tensor_parallel_size devices each)."""
    specs = config.device_specs
    if specs[0].device_type == "cpu" or len(specs) <= 1:
        return config
    tp = config.tensor_parallel_size
    return config.model_copy(update={"device_specs": specs[index * tp : (index + 1) * tp]})


def affinity_key(prompt: Any) -> str:
    """A short digest of the prompt's opening: text, token ids, or chat messages."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], dict):
        text = "\x1e".join(f"{m.get('role')}\x1f{m.get('content')}" for m in prompt)
    else:
        text = repr(prompt)
    return hashlib.blake2b(text[:AFFINITY_CHARS].encode(errors="replace"), digest_size=8).hexdigest()


class ReplicaRouter:
    def __init__(self, drivers: list[EngineDriver], affinity_slack: int = 4) -> None:
        if not drivers:
            raise ValueError("a router needs at least one replica")
        self.drivers = drivers
        self.affinity_slack = affinity_slack
        self.routed = [0] * len(drivers)  # jobs sent to each replica (for /metrics)
        self._affinity: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def load(driver: EngineDriver) -> int:
        return driver.stats.num_running + driver.queue_length

    def pick(self, key: str | None = None) -> EngineDriver:
        loads = [self.load(d) if d.alive else 1 << 30 for d in self.drivers]
        least = min(range(len(loads)), key=lambda i: (loads[i], self.routed[i]))
        choice = least
        if key is not None:
            known = self._affinity.get(key)
            if known is not None and loads[known] <= loads[least] + self.affinity_slack:
                choice = known
            self._affinity[key] = choice
            self._affinity.move_to_end(key)
            if len(self._affinity) > AFFINITY_ENTRIES:
                self._affinity.popitem(last=False)
        self.routed[choice] += 1
        return self.drivers[choice]

    @property
    def alive(self) -> bool:
        return all(d.alive for d in self.drivers)

    def stop(self) -> None:
        for d in self.drivers:
            d.stop()
        for d in self.drivers:
            d.engine.close()
