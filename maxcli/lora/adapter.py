"""A LoRA adapter in PEFT's layout: `adapter_config.json` + `adapter_model.safetensors` (or .bin), from a
local folder or a hub repo (HuggingFaceRepo over huggingface_hub, so HF_ENDPOINT / the offline cache apply).

Scaling per PEFT: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora. Tensors by module:
`base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight` [out, r].
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class LoRAError(ValueError):
    """An adapter that cannot be served; the message names the adapter and the problem in one line."""


@dataclass
class LoRAAdapter:
    name: str
    source: str
    rank: int
    scaling: float
    target_modules: list[str]
    base_model: str | None
    # checkpoint module name (model.layers.0.self_attn.q_proj) -> (A [r, in], B [out, r] * scaling), float32
    modules: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(a.numel() * a.element_size() + b.numel() * b.element_size() for a, b in self.modules.values())


def _folder(name: str, source: str, revision: str | None) -> Path:
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LoRAError(f"adapter {name}: {source} is not a folder")
        return path
    if source.startswith((".", "/")) or source.count("/") != 1:
        raise LoRAError(f"adapter {name}: no such folder {source}")
    try:
        from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo

        repo = HuggingFaceRepo(repo_id=source, revision=revision or "main")
        files = [f for f in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin") if f in repo.files]
        if "adapter_config.json" not in files:
            raise LoRAError(f"adapter {name}: hub repo {source} has no adapter_config.json (not a PEFT adapter)")
        return [repo.download(f) for f in files][0].parent
    except LoRAError:
        raise
    except Exception as exc:  # noqa: BLE001 - hub errors carry multi-line messages
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LoRAError(f"adapter {name}: cannot fetch {source}: {first}") from None


def _tensors(name: str, folder: Path) -> dict[str, torch.Tensor]:
    st = folder / "adapter_model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        try:
            return load_file(str(st))
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file
            raise LoRAError(f"adapter {name}: cannot read {st.name}: {str(exc).splitlines()[0]}") from None
    binary = folder / "adapter_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise LoRAError(f"adapter {name}: {folder} has no adapter_model.safetensors")


def load_adapter(name: str, source: str, max_rank: int, revision: str | None = None) -> LoRAAdapter:
    """Read and check one adapter (rank, type, options maxcli cannot serve); shapes against the model are
    checked when it is placed in a slot (LoRAManager)."""
    folder = _folder(name, source, revision)
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise LoRAError(f"adapter {name}: {folder} has no adapter_config.json (not a PEFT adapter folder)")
    try:
        config: dict[str, Any] = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise LoRAError(f"adapter {name}: adapter_config.json is not valid JSON: {exc}") from None
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise LoRAError(f"adapter {name}: peft_type {config.get('peft_type')} is not LORA")
    rank = int(config.get("r", 0))
    if rank < 1:
        raise LoRAError(f"adapter {name}: rank r={config.get('r')} must be a positive integer")
    if rank > max_rank:
        raise LoRAError(f"adapter {name}: rank {rank} exceeds max_lora_rank {max_rank}")
    unsupported = [(k, v) for k, v in (("use_dora", config.get("use_dora")), ("bias", config.get("bias", "none")),
                                       ("modules_to_save", config.get("modules_to_save")),
                                       ("rank_pattern", config.get("rank_pattern")), ("alpha_pattern", config.get("alpha_pattern")),
                                       ("fan_in_fan_out", config.get("fan_in_fan_out")))
                   if v not in (None, False, "none", {}, [])]
    if unsupported:
        key, value = unsupported[0]
        raise LoRAError(f"adapter {name}: {key}={value!r} is not supported")
    alpha = float(config.get("lora_alpha", rank))
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    tensors = _tensors(name, folder)
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
        kind = kind.removesuffix(".weight").removesuffix(".default")
        if kind not in ("A", "B") or not module:
            raise LoRAError(f"adapter {name}: tensor {key} is not a LoRA A/B pair of a projection (only those are served)")
        pairs.setdefault(module, {})[kind] = tensor.float()
    modules = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise LoRAError(f"adapter {name}: {module} has lora_{'A' if 'A' not in ab else 'B'} missing")
        a, b = ab["A"], ab["B"]
        if a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1] or a.shape[0] > max_rank:
            raise LoRAError(f"adapter {name}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, not a rank <= {max_rank} pair")
        modules[module] = (a.contiguous(), (b * scaling).contiguous())
    if not modules:
        raise LoRAError(f"adapter {name}: no LoRA weights in {folder}")
    targets = config.get("target_modules") or []
    return LoRAAdapter(name, source, rank, scaling, [targets] if isinstance(targets, str) else list(targets),
                       config.get("base_model_name_or_path"), modules)
