"""The architecture registry (mirrors `max.pipelines.lib.registry`).

An architecture is found by the `architectures[0]` name in the model's HF config (config.json, or GGUF
metadata turned into the same fields) and, when several share a name, by task.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from maxcli.interfaces import PipelineTask
from maxcli.plugins import architecture_packages
from maxcli.pipelines.lib.supported_architecture import ArchitectureNotFound, SupportedArchitecture

# Downstream modules (the loader, the pipelines, the HF config readers) import inside the functions that
# use them: they pull in torch, gguf and huggingface_hub, which `maxcli --help` must not pay for.

if TYPE_CHECKING:
    from maxcli.config import PipelineConfig
    from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo


logger = logging.getLogger("maxcli.registry")


class PipelineRegistry:
    def __init__(self, architectures: list[SupportedArchitecture] | None = None, *, builtins: bool = False) -> None:
        """`builtins=True` registers every architecture package (maxcli.plugins: the folders under
        maxcli/architectures/, then installed plugins) on first use. The registry never imports an
        architecture module by name: architectures import the registry's types, not the other way round."""
        self._builtins_pending = builtins
        self._architectures: dict[str, SupportedArchitecture] = {}
        self._by_name_task: dict[tuple[str, PipelineTask], SupportedArchitecture] = {}
        self._config_cache: dict[Any, Any] = {}
        self._tokenizer_cache: dict[Any, Any] = {}
        self._diffusers_cache: dict[Any, Any] = {}
        for arch in architectures or []:
            self.register(arch)

    def _ensure_builtins(self) -> None:
        if self._builtins_pending:
            self._builtins_pending = False
            for package in architecture_packages():
                for arch in getattr(package, "ARCHITECTURES", ()):
                    self.register(arch, allow_override=True)

    @property
    def architectures(self) -> dict[str, SupportedArchitecture]:
        self._ensure_builtins()
        return self._architectures

    # -- registration -----------------------------------------------------------------------------------

    def register(self, architecture: SupportedArchitecture, *, allow_override: bool = False) -> None:
        """Add an architecture. Same name, other task: both go to the (name, task) table as well."""
        self._ensure_builtins()
        name, key = architecture.name, (architecture.name, architecture.task)
        existing = self._architectures.get(name)
        same_task = existing is not None and existing.task == architecture.task
        if (same_task or key in self._by_name_task) and not allow_override:
            raise ValueError(f"architecture {name} ({architecture.task}) is already registered; use allow_override=True")
        if existing is None or same_task:
            self._architectures[name] = architecture
        if (existing is not None and not same_task) or key in self._by_name_task:
            if existing is not None:
                self._by_name_task.setdefault((name, existing.task), existing)
            self._by_name_task[key] = architecture

    def reset(self) -> None:
        self._builtins_pending = False
        self._architectures.clear()
        self._by_name_task.clear()
        self._config_cache.clear()
        self._tokenizer_cache.clear()
        self._diffusers_cache.clear()

    def all(self) -> list[SupportedArchitecture]:
        """Every registered architecture, the (name, task) variants included."""
        seen: dict[int, SupportedArchitecture] = {id(a): a for a in self.architectures.values()}  # loads builtins
        seen.update({id(a): a for a in self._by_name_task.values()})
        return sorted(seen.values(), key=lambda a: (a.name, a.task is not PipelineTask.TEXT_GENERATION, str(a.task)))

    def supported_names(self) -> list[str]:
        return sorted({a.name for a in self.all()})

    def names_for_task(self, task: PipelineTask) -> list[str]:
        return sorted({a.name for a in self.all() if a.task is task})

    def lookup(self, name: str, task: PipelineTask | None = None) -> SupportedArchitecture | None:
        """The architecture registered under `name` (for `task`, when given), or None."""
        return self._lookup(name, task)

    def _lookup(self, name: str, task: PipelineTask | None) -> SupportedArchitecture | None:
        self._ensure_builtins()
        if task is not None and (name, task) in self._by_name_task:
            return self._by_name_task[(name, task)]
        arch = self.architectures.get(name)
        if arch is not None and (task is None or arch.task == task):
            return arch
        if task is None:
            variants = [a for (n, _), a in self._by_name_task.items() if n == name]
            if variants:
                return next((a for a in variants if a.task is PipelineTask.TEXT_GENERATION), variants[0])
        return None

    # -- lookups ----------------------------------------------------------------------------------------

    def retrieve_architecture(
        self,
        huggingface_repo: "HuggingFaceRepo",
        use_legacy_module: bool = True,
        task: PipelineTask | None = None,
    ) -> SupportedArchitecture | None:
        """The architecture named by the repo's config. `use_legacy_module` is accepted for API parity:
        maxcli has one module per architecture, so a "<name>_Legacy" entry is used only if registered."""
        config = self.get_active_huggingface_config(huggingface_repo)
        for name in getattr(config, "architectures", None) or []:
            if use_legacy_module and (arch := self._lookup(f"{name}_Legacy", task)) is not None:
                return arch
            if (arch := self._lookup(name, task)) is not None:
                return arch
        return None

    def _require_architecture(
        self, pipeline_config: "PipelineConfig", override_architecture: str | None, task: PipelineTask | None
    ) -> SupportedArchitecture:
        override_architecture = override_architecture or getattr(pipeline_config, "architecture", None)
        if override_architecture:
            arch = self._lookup(override_architecture, task)
            names = [override_architecture]
        else:
            from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

            repo = huggingface_repo_for(pipeline_config)
            arch = self.retrieve_architecture(repo, task=task)
            names = list(getattr(self.get_active_huggingface_config(repo), "architectures", None) or ["<none>"])
        if arch is None:
            raise ArchitectureNotFound(
                f"no architecture for {pipeline_config.model_path or 'the model'} "
                f"(config names {', '.join(names)}{f' for task {task}' if task else ''}); "
                f"supported: {', '.join(self.supported_names())}"
            )
        return arch

    def retrieve_pipeline_task(self, pipeline_config: "PipelineConfig") -> PipelineTask:
        return self._require_architecture(pipeline_config, None, None).task

    def retrieve_context_type(
        self,
        pipeline_config: "PipelineConfig",
        override_architecture: str | None = None,
        task: PipelineTask | None = None,
    ) -> type:
        arch = self._require_architecture(pipeline_config, override_architecture, task)
        assert arch.context_type is not None
        return arch.context_type

    def retrieve_tokenizer(
        self,
        pipeline_config: "PipelineConfig",
        override_architecture: str | None = None,
        task: PipelineTask | None = None,
    ) -> Any:
        from maxcli.pipelines.lib.factory import build_tokenizer

        arch = self._require_architecture(pipeline_config, override_architecture, task)
        return build_tokenizer(pipeline_config, arch)

    def retrieve_factory(
        self,
        pipeline_config: "PipelineConfig",
        task: PipelineTask = PipelineTask.TEXT_GENERATION,
        override_architecture: str | None = None,
    ) -> tuple[Any, Callable[[], Any]]:
        """The tokenizer now, and a callable that loads weights and builds the pipeline when invoked."""
        from maxcli.pipelines.lib.factory import build_pipeline, build_tokenizer, resolve_for_architecture
        from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

        arch = self._require_architecture(pipeline_config, override_architecture, task)
        hf_config = self.get_active_huggingface_config(huggingface_repo_for(pipeline_config))
        resolved = resolve_for_architecture(pipeline_config, arch, hf_config)
        tokenizer = build_tokenizer(resolved.config, arch)
        return tokenizer, functools.partial(build_pipeline, resolved, arch, tokenizer)

    def retrieve(
        self,
        pipeline_config: "PipelineConfig",
        task: PipelineTask = PipelineTask.TEXT_GENERATION,
        override_architecture: str | None = None,
    ) -> tuple[Any, Any]:
        tokenizer, factory = self.retrieve_factory(pipeline_config, task, override_architecture)
        return tokenizer, factory()

    # -- cached HF objects ------------------------------------------------------------------------------

    def get_active_huggingface_config(self, huggingface_repo: "HuggingFaceRepo") -> Any:
        """The repo's config, cached per repo (trust_remote_code included): a transformers PretrainedConfig
        for config.json, a ConfigSnapshot of one for GGUF metadata (maxcli.pipelines.lib.hf_config)."""
        if huggingface_repo not in self._config_cache:
            from maxcli.pipelines.lib.hf_config import load_pretrained_config

            self._config_cache[huggingface_repo] = load_pretrained_config(huggingface_repo)
        return self._config_cache[huggingface_repo]

    def get_active_tokenizer(self, huggingface_repo: "HuggingFaceRepo") -> Any:
        """transformers' tokenizer for the repo, cached per repo."""
        if huggingface_repo not in self._tokenizer_cache:
            from maxcli.pipelines.lib.hf_config import load_hf_tokenizer

            self._tokenizer_cache[huggingface_repo] = load_hf_tokenizer(huggingface_repo)
        return self._tokenizer_cache[huggingface_repo]

    def get_active_diffusers_config(self, huggingface_repo: "HuggingFaceRepo") -> dict[str, Any] | None:
        """model_index.json of a diffusion pipeline repo; None for every other repo."""
        if huggingface_repo not in self._diffusers_cache:
            cfg = None
            if huggingface_repo.file_exists("model_index.json"):
                cfg = json.loads(huggingface_repo.download("model_index.json").read_text())
            self._diffusers_cache[huggingface_repo] = cfg
        return self._diffusers_cache[huggingface_repo]


def get_pipeline_for_task(task: PipelineTask, pipeline_config: "PipelineConfig") -> type:
    if task is PipelineTask.EMBEDDINGS_GENERATION:
        from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline

        return EmbeddingsPipeline
    from maxcli.pipelines.lib.text_generation import TextGenerationPipeline

    return TextGenerationPipeline


PIPELINE_REGISTRY = PipelineRegistry(builtins=True)
