"""LoRAManager: the adapters a pipeline serves, `max_num_loras` of them resident in slots at once.

Registered adapters (name -> source) are read and checked at registration; a request names one, and
`activate(names)` makes a step's adapters resident (reading an evicted one again, evicting the least
recently used adapter the step does not need). Slots hold the adapters' weights in every LoRALinear
(maxcli.nn.lora); a slot's rows are picked per token by the pipeline.

Invariants: every resident adapter has exactly one slot; len(resident) <= num_slots; an adapter with
requests in flight (`pinned`) is never evicted or unloaded (unload waits for them: `retire`).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from typing import Any, Sequence

from torch import nn

from maxcli.lora.adapter import LoRAAdapter, LoRAError, load_adapter
from maxcli.nn.lora import LoRALinear, fused_target, install_lora_layers


class UnknownAdapter(LookupError):
    """A request named an adapter that is not registered."""


class LoRAManager:
    def __init__(self, module: nn.Module, stacked: Sequence[tuple[str, str, Any]], num_slots: int, max_rank: int,
                 adapters: dict[str, str] | None = None, base_name: str = "") -> None:
        self.layers: dict[str, LoRALinear] = install_lora_layers(module, num_slots, max_rank)
        if not self.layers:
            raise LoRAError("this model has no projections a LoRA adapter can target")
        self.stacked, self.num_slots, self.max_rank, self.base_name = tuple(stacked), num_slots, max_rank, base_name
        self.sources: dict[str, str] = {}
        self.resident: OrderedDict[str, int] = OrderedDict()  # least recently used first
        self.pinned: Counter[str] = Counter()  # requests in flight per adapter
        self.retiring: set[str] = set()  # unload once their last request finishes
        self.loads = self.evictions = 0
        self.requests: Counter[str] = Counter()
        self.lock = threading.Lock()
        for name, source in (adapters or {}).items():
            self.register(name, source)

    # -- registration -----------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return [n for n in self.sources if n not in self.retiring]

    def register(self, name: str, source: str) -> LoRAAdapter:
        """Read and check the adapter against this model (LoRAError, one line), then serve it as `name`."""
        if not name or name == self.base_name:
            raise LoRAError(f"adapter name {name!r} is empty or the base model's name")
        with self.lock:
            if name in self.sources and name not in self.retiring:
                raise LoRAError(f"adapter {name} is already loaded")
        adapter = load_adapter(name, source, self.max_rank)
        self._parts(adapter)  # every module and shape fits this model
        with self.lock:
            self.sources[name] = source
            self.retiring.discard(name)
            if len(self.resident) < self.num_slots:
                self._place(adapter, self._free_slot())
        return adapter

    def unregister(self, name: str) -> bool:
        """Stop serving `name`: now when idle (True), else after its in-flight requests finish (False)."""
        with self.lock:
            if name not in self.sources or name in self.retiring:
                raise UnknownAdapter(name)
            if self.pinned[name]:
                self.retiring.add(name)
                return False
            self._drop(name)
            return True

    def _drop(self, name: str) -> None:
        slot = self.resident.pop(name, None)
        if slot is not None:
            for layer in self.layers.values():
                layer.clear_slot(slot)
        self.sources.pop(name, None)
        self.retiring.discard(name)

    # -- requests -----------------------------------------------------------------------------------------

    def check(self, name: str | None) -> None:
        """UnknownAdapter unless `name` is None or a served adapter."""
        if name is not None and (name not in self.sources or name in self.retiring):
            raise UnknownAdapter(name)

    def pin(self, name: str | None) -> None:
        if name is not None:
            with self.lock:
                self.check(name)
                self.pinned[name] += 1
                self.requests[name] += 1

    def unpin(self, name: str | None) -> None:
        if name is None:
            return
        with self.lock:
            self.pinned[name] -= 1
            if self.pinned[name] <= 0:
                del self.pinned[name]
                if name in self.retiring:
                    self._drop(name)

    def activate(self, names: Sequence[str | None]) -> list[int]:
        """The slot of each name (-1 for None), making the step's adapters resident first."""
        wanted = list(dict.fromkeys(n for n in names if n is not None))
        if len(wanted) > self.num_slots:
            raise LoRAError(f"a step needs {len(wanted)} adapters but max_num_loras is {self.num_slots}")
        with self.lock:
            for name in wanted:
                if name in self.resident:
                    self.resident.move_to_end(name)
                    continue
                if name not in self.sources:
                    raise UnknownAdapter(name)
                slot = self._free_slot()
                if slot is None:
                    victim = next(n for n in self.resident if n not in wanted)
                    slot = self.resident.pop(victim)
                    self.evictions += 1
                self._place(load_adapter(name, self.sources[name], self.max_rank), slot)
            return [-1 if n is None else self.resident[n] for n in names]

    # -- slots --------------------------------------------------------------------------------------------

    def _free_slot(self) -> int | None:
        used = set(self.resident.values())
        return next((s for s in range(self.num_slots) if s not in used), None)

    def _parts(self, adapter: LoRAAdapter) -> dict[str, dict[int, Any]]:
        """Per wrapped layer: fused part index -> (A, B) of the adapter, shapes checked."""
        parts: dict[str, dict[int, Any]] = {}
        for module, (a, b) in adapter.modules.items():
            target = fused_target(module, self.layers, self.stacked)
            if target is None:
                raise LoRAError(f"adapter {adapter.name}: target module {module} is not a projection of this model")
            layer_name, j = target
            layer = self.layers[layer_name]
            if a.shape[1] != layer.in_features or b.shape[0] != layer.split_sizes[j]:
                raise LoRAError(f"adapter {adapter.name}: {module} maps {a.shape[1]} -> {b.shape[0]} features, the model's "
                                f"{layer.in_features} -> {layer.split_sizes[j]} (an adapter for another base model?)")
            parts.setdefault(layer_name, {})[j] = (a, b)
        return parts

    def _place(self, adapter: LoRAAdapter, slot: int | None) -> None:
        assert slot is not None
        parts = self._parts(adapter)
        for name, layer in self.layers.items():
            layer.set_slot(slot, parts.get(name, {}))
        self.resident[adapter.name] = slot
        self.loads += 1
