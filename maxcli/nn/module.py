"""`Module`: the guide's declarative module (mirrors `max.nn.Module`) on top of `torch.nn.Module`.

    class MLP(Module):
        fc1: Linear
        fc2: Linear

        def forward(self, x):
            return self.fc2(self.fc1(x))

    model = MLP(fc1=Linear(10, 20), fc2=Linear(20, 5))
    for name, param in model.parameters: ...
    model.to(Accelerator())

Annotated fields (inherited ones first, in declaration order) are the constructor's arguments, by keyword
or position; a field with a class-level value is optional. A subclass may write its own `__init__` and
call `super().__init__(...)`. Everything else is torch: children register as submodules, `state_dict`,
`load_state_dict`, hooks and `torch.compile` work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from maxcli.driver import DeviceSpec

_NO_DEFAULT = object()


class ParameterView:
    """`module.parameters`: iterates (name, tensor) pairs as the guide does, and stays callable the way
    torch calls it (`module.parameters()` -> the tensors), so optimizers and torch utilities keep working."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self._module.named_parameters())

    def __call__(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return nn.Module.parameters(self._module, recurse)

    def __len__(self) -> int:
        return sum(1 for _ in self._module.named_parameters())

    def __repr__(self) -> str:
        return f"ParameterView({[n for n, _ in self]})"


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return "ClassVar" in text


class Module(nn.Module):
    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields: list[str] = []
        for klass in reversed(cls.__mro__):
            if not (isinstance(klass, type) and issubclass(klass, Module)) or klass is Module:
                continue
            for name, annotation in vars(klass).get("__annotations__", {}).items():
                if not name.startswith("_") and not _is_classvar(annotation) and name not in fields:
                    fields.append(name)
        cls._fields = tuple(fields)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        cls = type(self)
        if len(args) > len(cls._fields):
            raise TypeError(f"{cls.__name__}() takes {len(cls._fields)} positional field(s), got {len(args)}")
        values = dict(zip(cls._fields, args))
        for name in kwargs:
            if name not in cls._fields:
                raise TypeError(f"{cls.__name__}() got an unexpected field {name!r} (fields: {', '.join(cls._fields) or 'none'})")
            if name in values:
                raise TypeError(f"{cls.__name__}() got field {name!r} twice")
        values.update(kwargs)
        missing = [n for n in cls._fields if n not in values and getattr(cls, n, _NO_DEFAULT) is _NO_DEFAULT]
        if missing:
            raise TypeError(f"{cls.__name__}() missing field(s): {', '.join(missing)}")
        for name, value in values.items():
            setattr(self, name, value)

    @property
    def parameters(self) -> ParameterView:  # type: ignore[override]
        return ParameterView(self)

    def to(self, *args: Any, **kwargs: Any) -> "Module":  # type: ignore[override]
        """torch's `to`, also taking a maxcli.driver device (`CPU()`, `Accelerator()`, a DeviceSpec)."""
        if args and isinstance(args[0], DeviceSpec):
            args = (args[0].torch_device, *args[1:])
        return super().to(*args, **kwargs)


class LayerList(nn.ModuleList):
    """A list of layers (mirrors `max.nn.LayerList`): indexable, iterable, registered as children."""
