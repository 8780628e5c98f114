"""A repo's config and tokenizer as transformers objects (config.json, or GGUF metadata turned into it)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo


def load_pretrained_config(repo: "HuggingFaceRepo") -> Any:
    """transformers PretrainedConfig for the repo; a model_type transformers lacks gives a plain one."""
    from transformers import AutoConfig, PretrainedConfig

    from maxcli.pipelines.lib.hf_repo import load_hf_config

    values = dict(load_hf_config(repo))
    model_type = values.pop("model_type", None)
    if model_type:
        try:
            return AutoConfig.for_model(model_type, **values)
        except ValueError:
            pass
    cfg = PretrainedConfig(**values)
    if model_type:
        cfg.model_type = model_type
    return cfg


def gguf_location(repo: "HuggingFaceRepo") -> tuple[str, str | None]:
    """(folder or repo id, gguf file name or None) for loading a tokenizer."""
    p = Path(repo.repo_id)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), p.name
    return repo.repo_id, None


def load_hf_tokenizer(repo: "HuggingFaceRepo") -> Any:
    from transformers import AutoTokenizer

    where, gguf_file = gguf_location(repo)
    kwargs: dict[str, Any] = {"trust_remote_code": repo.trust_remote_code, "revision": repo.revision}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return AutoTokenizer.from_pretrained(where, **kwargs)
