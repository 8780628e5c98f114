"""Entry points that start from a bare PipelineConfig: what `generate`, `serve`, `encode`, `warm-cache`,
the offline `LLM` and the benchmarks call. The top of the loading chain:

    config -> registry lookup -> loader / builder (factory) -> pipeline -> engine

Each one registers the config's custom architectures, fills in the default model, looks the architecture
up once, and hands it down; nothing below imports this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxcli.config import ConfigError, PipelineConfig, PipelineEngine
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.lib.custom import prepare_config
from maxcli.pipelines.lib.registry import PIPELINE_REGISTRY
from maxcli.pipelines.lib.supported_architecture import ArchitectureNotFound


def load_text_generation(config: PipelineConfig) -> tuple[Any, Any]:
    """(tokenizer, pipeline) for generate / serve, native or through the transformers fallback."""
    config = prepare_config(config)
    config.validate_lora_compatibility()
    if config.engine is PipelineEngine.HUGGINGFACE:
        if config.tensor_parallel_size > 1:
            raise ConfigError("--engine huggingface runs on one device; drop --tensor-parallel-size")
        from maxcli.pipelines.lib.hf_engine import load_huggingface_pipeline

        return load_huggingface_pipeline(config)
    if config.tensor_parallel_size > 1:
        from maxcli.distributed.launch import start_tensor_parallel
        from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

        # fail in this process, before any rank starts, when the architecture cannot be split
        arch = PIPELINE_REGISTRY.retrieve_architecture(huggingface_repo_for(config))
        if arch is not None:
            config.validate_multi_gpu_supported(arch.multi_gpu_supported, arch.name)
        return start_tensor_parallel(config)
    return PIPELINE_REGISTRY.retrieve(config, task=PipelineTask.TEXT_GENERATION)


def load_engine(config: PipelineConfig) -> Any:
    """An LLMEngine over the config's model (and its draft model for standalone speculative decoding)."""
    from maxcli.distributed.launch import run_if_torchrun_worker
    from maxcli.engine.engine import LLMEngine

    run_if_torchrun_worker(config)  # under torchrun, ranks > 0 serve rank 0's steps and exit here
    tokenizer, pipeline = load_text_generation(config)
    draft = None
    if config.speculative.speculative_method == "standalone":
        from maxcli.engine.draft_model import check_same_vocabulary, draft_config

        draft_tokenizer, draft = load_text_generation(draft_config(config, pipeline))
        check_same_vocabulary(tokenizer, draft_tokenizer, config.speculative.draft_model)
    return LLMEngine(tokenizer, pipeline, config, draft)


def resolve_model(config: PipelineConfig) -> tuple[PipelineConfig, PipelineTask]:
    """Prepare the config and look its architecture up once: (the config with `architecture` pinned to
    the entry found, the task). Loading the returned config does not look the model up again."""
    config = prepare_config(config)
    if config.engine is PipelineEngine.HUGGINGFACE:
        return config, PipelineTask.TEXT_GENERATION  # the transformers fallback serves causal LMs only
    task = PIPELINE_REGISTRY.retrieve_pipeline_task(config)
    if config.architecture is None:
        from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

        arch = PIPELINE_REGISTRY.retrieve_architecture(huggingface_repo_for(config), task=task)
        if arch is not None:
            config = config.model_copy(update={"architecture": arch.name})
    return config, task


def model_task(config: PipelineConfig) -> PipelineTask:
    """The task of the config's model (custom architectures registered first)."""
    return resolve_model(config)[1]


def load_embeddings_pipeline(config: PipelineConfig, truncate: bool = False) -> Any:
    config = prepare_config(config)
    _, pipeline = PIPELINE_REGISTRY.retrieve(config, task=PipelineTask.EMBEDDINGS_GENERATION)
    pipeline.truncate = truncate
    return pipeline


def load_embedding_model(model_dir: str | Path, **kwargs: Any) -> Any:
    """(model, tokenizer, pooling, max_length) from a local HF / sentence-transformers folder, the
    embedding architecture picked by the registry from its config.json."""
    import json

    from maxcli.pipelines.lib.embeddings import load_embedding_folder

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir}: not a model folder (no config.json)")
    names = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    arch = next((a for n in names if (a := PIPELINE_REGISTRY.lookup(n, PipelineTask.EMBEDDINGS_GENERATION))), None)
    if arch is None:
        raise ArchitectureNotFound(f"{model_dir}: {', '.join(names) or 'no architecture'} is not an embedding "
                                   f"architecture here ({', '.join(PIPELINE_REGISTRY.names_for_task(PipelineTask.EMBEDDINGS_GENERATION))})")
    return load_embedding_folder(model_dir, arch.pipeline_model, **kwargs)


def warm_model_cache(config: PipelineConfig) -> dict[str, Any]:
    """Resolve, download what is missing, load every weight once (validating shapes), and summarize."""
    from maxcli.pipelines.lib.factory import build_pipeline, build_tokenizer, resolve_for_architecture
    from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

    config = prepare_config(config)
    repo = huggingface_repo_for(config)
    arch = PIPELINE_REGISTRY.retrieve_architecture(repo)
    if arch is None:
        PIPELINE_REGISTRY.retrieve_pipeline_task(config)  # raises the "no architecture" error with the list
        raise AssertionError("unreachable")
    resolved = resolve_for_architecture(config, arch, PIPELINE_REGISTRY.get_active_huggingface_config(repo))
    tokenizer = build_tokenizer(resolved.config, arch)
    pipeline = build_pipeline(resolved, arch, tokenizer)
    files = [{"path": str(p), "bytes": p.stat().st_size} for p in resolved.weight_paths]
    module = getattr(getattr(pipeline, "pipeline_model", None), "module", None)
    num_tensors = sum(1 for _ in module.state_dict()) if module is not None else None
    del pipeline
    return {
        "model": config.model_path,
        "architecture": arch.name,
        "task": str(arch.task),
        "encoding": str(resolved.encoding),
        "weights_format": str(resolved.weights_format),
        "cache_dir": str(resolved.weight_paths[0].parent),
        "files": files,
        "num_tensors": num_tensors,
        "total_bytes": sum(f["bytes"] for f in files),
    }
