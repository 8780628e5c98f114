"""Devices (mirrors `max.driver`): thin wrappers over torch devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DeviceSpec:
    """A device by kind and index: `cpu`, `gpu` (gpu:0) or `gpu:N`."""

    id: int = 0
    device_type: Literal["cpu", "gpu"] = "cpu"

    @staticmethod
    def cpu(id: int = 0) -> "DeviceSpec":
        return DeviceSpec(id, "cpu")

    @staticmethod
    def accelerator(id: int = 0) -> "DeviceSpec":
        return DeviceSpec(id, "gpu")

    @property
    def torch_device(self) -> "torch.device":
        import torch

        return torch.device("cpu") if self.device_type == "cpu" else torch.device("cuda", self.id)

    def __str__(self) -> str:
        return "cpu" if self.device_type == "cpu" else f"gpu:{self.id}"


def parse_device_specs(text: str) -> list[DeviceSpec]:
    """`cpu` | `gpu` | `gpu:0,1` -> device specs; anything else is a ValueError."""
    t = text.strip().lower()
    if t in ("cpu", "cpu:0"):
        return [DeviceSpec.cpu()]
    if t in ("gpu", "default"):
        return [DeviceSpec.accelerator(0)] if t == "gpu" else [DeviceSpec.cpu()]
    if t.startswith("gpu:"):
        try:
            ids = [int(x) for x in t[4:].split(",") if x.strip() != ""]
        except ValueError:
            ids = []
        if ids and all(i >= 0 for i in ids) and len(set(ids)) == len(ids):
            return [DeviceSpec.accelerator(i) for i in ids]
    raise ValueError(f"invalid device spec {text!r}: expected cpu, gpu or gpu:0,1,...")


def accelerator_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def CPU(id: int = 0) -> "torch.device":
    import torch

    return torch.device("cpu")


class DeviceUnavailable(RuntimeError):
    """The requested device does not exist on this machine."""


def Accelerator(id: int = 0) -> "torch.device":
    """CUDA device `id`; DeviceUnavailable (one line) when this machine has no such GPU, as MAX's
    Accelerator() fails on a machine without one."""
    import torch

    have = accelerator_count()
    if id >= have:
        raise DeviceUnavailable(f"Accelerator({id}): this machine has {have} CUDA device(s)")
    return torch.device("cuda", id)
