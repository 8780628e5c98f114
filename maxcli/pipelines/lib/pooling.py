"""Turning per-token hidden states into one vector per input, as sentence-transformers does.

A sentence-transformers folder says how: modules.json lists the modules in order (Transformer, Pooling,
optionally Normalize) and the Pooling module's config.json sets the pooling modes. Several modes may be
on at once; their vectors are concatenated in sentence-transformers' order (cls, max, mean, mean_sqrt_len,
lasttoken). Without those files: mean + normalize for encoders, last token + normalize for decoders.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F


class PoolingMode(str, enum.Enum):
    CLS = "cls"
    MAX = "max"
    MEAN = "mean"
    MEAN_SQRT_LEN = "mean_sqrt_len"
    LAST_TOKEN = "last_token"


# sentence-transformers Pooling config key -> mode, in the order its vectors are concatenated.
_ST_KEYS: dict[str, PoolingMode] = {
    "pooling_mode_cls_token": PoolingMode.CLS,
    "pooling_mode_max_tokens": PoolingMode.MAX,
    "pooling_mode_mean_tokens": PoolingMode.MEAN,
    "pooling_mode_mean_sqrt_len_tokens": PoolingMode.MEAN_SQRT_LEN,
    "pooling_mode_lasttoken": PoolingMode.LAST_TOKEN,
}
_ST_UNSUPPORTED = ("pooling_mode_weightedmean_tokens",)


@dataclass(frozen=True)
class PoolingConfig:
    modes: tuple[PoolingMode, ...] = (PoolingMode.MEAN,)
    normalize: bool = True

    def __post_init__(self) -> None:
        if not self.modes:
            raise ValueError("PoolingConfig needs at least one pooling mode")

    @classmethod
    def default(cls, is_decoder: bool) -> "PoolingConfig":
        return cls((PoolingMode.LAST_TOKEN if is_decoder else PoolingMode.MEAN,), True)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, is_decoder: bool = False) -> "PoolingConfig":
        """Read modules.json + the Pooling module's config; the default for the model kind if absent."""
        model_dir = Path(model_dir)
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            return cls.default(is_decoder)
        modules = _read_json(modules_file)
        if not isinstance(modules, list):
            raise ValueError(f"{modules_file}: expected a list of modules")
        pooling_dirs = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")]
        normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        if not pooling_dirs:
            default = cls.default(is_decoder)
            return cls(default.modes, normalize)
        pooling_file = model_dir / pooling_dirs[0] / "config.json"
        if not pooling_file.is_file():
            raise ValueError(f"{modules_file} names a Pooling module but {pooling_file} is missing")
        return cls(_modes_from_st_config(_read_json(pooling_file), pooling_file), normalize)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc.msg} at line {exc.lineno})") from None


def _modes_from_st_config(config: object, source: Path) -> tuple[PoolingMode, ...]:
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object")
    for key in _ST_UNSUPPORTED:
        if config.get(key):
            raise ValueError(f"{source}: {key} is not supported")
    modes = tuple(mode for key, mode in _ST_KEYS.items() if config.get(key))
    if not modes:
        raise ValueError(f"{source}: no pooling mode is enabled")
    return modes


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, config: PoolingConfig) -> torch.Tensor:
    """hidden [B, L, H], attention_mask [B, L] (1 = token; right padding) -> [B, H * len(modes)] float32."""
    hidden = hidden.float()
    mask = attention_mask.to(hidden.dtype)[:, :, None]  # [B, L, 1]
    lengths = mask.sum(dim=1)  # [B, 1]; >= 1 for every row the pipeline builds
    vectors = []
    for mode in config.modes:
        if mode is PoolingMode.CLS:
            vectors.append(hidden[:, 0])
        elif mode is PoolingMode.MAX:
            vectors.append(hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1))
        elif mode is PoolingMode.MEAN:
            vectors.append((hidden * mask).sum(dim=1) / lengths)
        elif mode is PoolingMode.MEAN_SQRT_LEN:
            vectors.append((hidden * mask).sum(dim=1) / lengths.sqrt())
        else:  # LAST_TOKEN: the last position whose mask is 1
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            last = (attention_mask.to(torch.long) * positions).argmax(dim=1)
            vectors.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), last])
    out = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)
    return F.normalize(out, p=2.0, dim=-1) if config.normalize else out
