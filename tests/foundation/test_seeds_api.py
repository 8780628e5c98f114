"""Every documented name on the four seed pages (../shared/seeds), under `max.` -> `maxcli.`: it imports,
has the documented parameters (in the documented order where the page gives a signature), and behaves as
documented, or fails with a one-line error that says why it cannot apply here. The table is written from
the pages."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from maxcli.config import ConfigError

# module -> object -> documented attributes (fields, methods, properties, members)
DOCUMENTED: dict[str, dict[str, list[str]]] = {
    "maxcli.pipelines.config": {  # max-pipelines-config
        "HuggingFaceRepo": ["download", "encoding_for_file", "file_exists", "files_for_encoding", "formats_available",
                            "info", "repo_id", "repo_type", "size_of", "supported_encodings", "trust_remote_code",
                            "weight_files"],
        "PipelineConfig": ["architecture", "cache_strategy", "device", "device_specs", "devices", "download_weights",
                           "dtype", "enable_prefix_caching", "engine", "force_download", "gpu_memory_utilization",
                           "help", "huggingface_config", "huggingface_repo_id", "huggingface_weights_repo",
                           "kv_cache_page_size", "load_weights", "max_cache_batch_size", "max_length",
                           "max_new_tokens", "quantization_encoding", "rope_type", "short_name", "top_k",
                           "trust_remote_code", "update_architecture", "weight_path", "weights_format",
                           "weights_size"],
        "PipelineEngine": ["HUGGINGFACE", "MAX"],
        "RepoType": ["local", "online"],
        "RopeType": ["neox", "none", "normal"],
        "SupportedEncoding": ["bfloat16", "dtype", "float32", "parse_from_file_name", "q4_0", "q4_k", "q6_k",
                              "quantization_encoding"],
        "WeightsFormat": ["gguf", "pytorch", "safetensors"],
    },
    "maxcli.pipelines.lib.model_config": {  # max-model-config
        "MAXModelConfig": ["allow_safetensors_weights_fp32_bf6_bidirectional_cast", "create_kv_cache_config",
                           "data_parallel_degree", "default_device_spec", "device_specs", "diffusers_config",
                           "force_download", "generation_config", "graph_quantization_encoding",
                           "huggingface_config", "huggingface_model_repo", "huggingface_model_revision",
                           "huggingface_weight_repo", "huggingface_weight_repo_id", "huggingface_weight_revision",
                           "kv_cache", "max_length", "model_config", "model_name", "model_path", "model_post_init",
                           "quantization_encoding", "resolve", "rope_type", "sampling_params_defaults",
                           "served_model_name", "set_cache_dtype_given_quantization_encoding", "trust_remote_code",
                           "use_subgraphs", "validate_and_resolve_quantization_encoding_weight_path",
                           "validate_and_resolve_rope_type",
                           "validate_and_resolve_with_resolved_quantization_encoding",
                           "validate_lora_compatibility", "validate_max_length", "validate_multi_gpu_supported",
                           "vision_config_overrides", "weight_path", "weights_size"],
        "MAXModelConfigBase": ["model_config"],
    },
    "maxcli.pipelines.lib.registry": {  # max-pipelines-registry
        "PipelineRegistry": ["get_active_diffusers_config", "get_active_huggingface_config", "get_active_tokenizer",
                             "register", "reset", "retrieve", "retrieve_architecture", "retrieve_context_type",
                             "retrieve_factory", "retrieve_pipeline_task", "retrieve_tokenizer"],
        "SupportedArchitecture": ["config", "context_type", "context_validators", "default_encoding",
                                  "default_weights_format", "example_repo_ids", "multi_gpu_supported", "name",
                                  "pipeline_model", "required_arguments", "requires_max_batch_context_length",
                                  "rope_type", "supported_encodings", "supports_empty_batches", "task", "tokenizer",
                                  "tokenizer_cls", "weight_adapters"],
        "get_pipeline_for_task": [],
        "PIPELINE_REGISTRY": [],
    },
    # max-model-pipeline-guide
    "maxcli.pipelines": {"PIPELINE_REGISTRY": ["retrieve", "retrieve_factory"], "PipelineConfig": []},
    "maxcli.pipelines.core": {"TextContext": ["request_id"], "TextAndVisionContext": ["pixel_values"]},
    "maxcli.pipelines.lib": {
        "PipelineModel": ["calculate_max_seq_len", "execute", "prepare_initial_token_inputs",
                          "prepare_next_token_inputs", "get_kv_params", "get_num_layers", "estimate_kv_cache_size",
                          "estimate_weights_size", "load_model"],
        "ModelInputs": [], "ModelOutputs": [], "RopeType": ["normal"], "SupportedArchitecture": [],
        "SupportedEncoding": ["q4_k", "bfloat16"], "TextTokenizer": ["new_context", "decode", "encode"],
        "TextGenerationPipeline": ["execute", "release", "kv_managers"], "EmbeddingsPipeline": ["execute", "release"],
    },
    "maxcli.interfaces": {
        "Pipeline": ["execute", "release"], "PipelineInputs": [], "PipelineOutput": ["is_done"],
        "PipelineTokenizer": ["new_context", "encode", "decode"], "PipelineTask": ["TEXT_GENERATION",
                                                                                 "EMBEDDINGS_GENERATION"],
        "RequestID": [], "TextGenerationInputs": ["batches", "num_steps"], "TextGenerationOutput": ["tokens", "is_done"],
        "TextGenerationRequest": ["request_id", "model_name", "prompt"], "InputError": [],
    },
    "maxcli.nn": {"Module": ["parameters", "to"], "Linear": [], "Embedding": [], "RMSNorm": [], "LayerNorm": [],
                  "PagedAttention": [], "LayerList": []},
    "maxcli.nn.legacy.kv_cache": {"KVCacheStrategy": ["PAGED"]},
    "maxcli.kv_cache": {"PagedKVCacheManager": ["claim", "alloc", "fetch", "step", "release"]},
    "maxcli.graph.weights": {"WeightsFormat": ["safetensors", "gguf"]},
    "maxcli.driver": {"Accelerator": [], "CPU": [], "DeviceSpec": []},
}

# callables whose pages give a signature: documented parameters, in order (self and **kwargs left out)
SIGNATURES: dict[str, list[str]] = {
    "maxcli.pipelines.lib.registry.PipelineRegistry.__init__": ["architectures"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.register": ["architecture", "allow_override"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve": ["pipeline_config", "task", "override_architecture"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve_factory": ["pipeline_config", "task", "override_architecture"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve_architecture": ["huggingface_repo", "use_legacy_module", "task"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve_context_type": ["pipeline_config", "override_architecture", "task"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve_tokenizer": ["pipeline_config", "override_architecture", "task"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.retrieve_pipeline_task": ["pipeline_config"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.get_active_huggingface_config": ["huggingface_repo"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.get_active_tokenizer": ["huggingface_repo"],
    "maxcli.pipelines.lib.registry.PipelineRegistry.get_active_diffusers_config": ["huggingface_repo"],
    "maxcli.pipelines.lib.registry.get_pipeline_for_task": ["task", "pipeline_config"],
    "maxcli.pipelines.lib.registry.SupportedArchitecture.__init__": [
        "name", "example_repo_ids", "default_encoding", "supported_encodings", "pipeline_model", "task", "tokenizer",
        "default_weights_format", "context_type", "config", "rope_type", "weight_adapters", "multi_gpu_supported",
        "required_arguments", "context_validators", "supports_empty_batches", "requires_max_batch_context_length"],
    "maxcli.pipelines.config.HuggingFaceRepo.__init__": ["repo_id", "trust_remote_code", "repo_type"],
    "maxcli.pipelines.config.HuggingFaceRepo.download": ["filename", "force_download"],
    "maxcli.pipelines.config.HuggingFaceRepo.encoding_for_file": ["file"],
    "maxcli.pipelines.config.HuggingFaceRepo.file_exists": ["filename"],
    "maxcli.pipelines.config.HuggingFaceRepo.files_for_encoding": ["encoding", "weights_format", "alternate_encoding"],
    "maxcli.pipelines.config.HuggingFaceRepo.size_of": ["filename"],
    "maxcli.pipelines.lib.model_config.MAXModelConfig.validate_and_resolve_quantization_encoding_weight_path": ["default_encoding"],
    "maxcli.pipelines.lib.model_config.MAXModelConfig.validate_and_resolve_rope_type": ["arch_rope_type"],
    "maxcli.pipelines.lib.model_config.MAXModelConfig.validate_and_resolve_with_resolved_quantization_encoding": [
        "supported_encodings", "default_weights_format"],
    "maxcli.pipelines.lib.model_config.MAXModelConfig.validate_multi_gpu_supported": ["multi_gpu_supported"],
    "maxcli.pipelines.lib.PipelineModel.calculate_max_seq_len": ["pipeline_config", "huggingface_config"],
    "maxcli.pipelines.lib.PipelineModel.execute": ["model_inputs"],
    "maxcli.pipelines.lib.PipelineModel.prepare_initial_token_inputs": ["context_batch", "kv_cache_inputs", "return_n_logits"],
    "maxcli.pipelines.lib.PipelineModel.prepare_next_token_inputs": ["next_tokens", "prev_model_inputs"],
    "maxcli.kv_cache.PagedKVCacheManager.claim": ["request_id"],
    "maxcli.kv_cache.PagedKVCacheManager.alloc": ["context", "num_steps"],
}

MAX_MODEL_CONFIG_FIELDS = [  # the page's signature, in order
    "config_file", "section_name", "use_subgraphs", "data_parallel_degree", "max_length", "model_path",
    "served_model_name", "weight_path", "quantization_encoding", "allow_safetensors_weights_fp32_bf6_bidirectional_cast",
    "huggingface_model_revision", "huggingface_weight_revision", "trust_remote_code", "device_specs", "force_download",
    "vision_config_overrides", "rope_type", "kv_cache"]


def _resolve(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_names_exist(module: str) -> None:
    mod = importlib.import_module(module)
    for name, attrs in DOCUMENTED[module].items():
        obj = getattr(mod, name)
        fields = set(getattr(obj, "model_fields", {})) | set(getattr(obj, "__dataclass_fields__", {}))
        missing = [a for a in attrs if a not in fields and not hasattr(obj, a)]
        assert not missing, f"{module}.{name} lacks {missing}"


@pytest.mark.parametrize("dotted", sorted(SIGNATURES))
def test_documented_parameters_in_order(dotted: str) -> None:
    params = [p.name for p in inspect.signature(_resolve(dotted)).parameters.values()
              if p.name not in ("self", "cls") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    want = SIGNATURES[dotted]
    assert params[: len(want)] == want, f"{dotted}{params}"


def test_max_model_config_fields_in_order() -> None:
    from maxcli.pipelines.lib.model_config import MAXModelConfig

    assert list(MAXModelConfig.model_fields)[: len(MAX_MODEL_CONFIG_FIELDS)] == MAX_MODEL_CONFIG_FIELDS


def test_older_config_page_spellings_map_onto_maxcli() -> None:
    """max.pipelines.config.PipelineConfig's parameters: each maps onto a maxcli setting, or is refused
    in one line (at any value other than the one that changes nothing)."""
    from maxcli.pipelines.config import PipelineConfig

    c = PipelineConfig(huggingface_repo_id="org/model", max_cache_batch_size=4, kv_cache_page_size=32,
                       cache_strategy="continuous", enable_prefix_caching=False, gpu_memory_utilization=0.5,
                       top_k=5, max_length=256, max_new_tokens=8, trust_remote_code=False, force_download=False,
                       rope_type="neox", engine="max", architecture="LlamaForCausalLM", weight_path=[],
                       device_specs="cpu", quantization_encoding="q4_k", max_num_steps=1, pad_to_multiple_of=2,
                       max_ce_batch_size=32, enable_echo=True, serialized_model_path=None,
                       save_to_serialized_model_path=None)
    assert (c.model_path, c.huggingface_repo_id, c.max_batch_size, c.max_cache_batch_size) == ("org/model", "org/model", 4, 4)
    assert (c.kv_cache.kv_cache_page_size, c.kv_cache.cache_strategy, c.kv_cache.enable_prefix_caching) == (32, "paged", False)
    assert (c.kv_cache.device_memory_utilization, c.sampling.top_k, c.top_k) == (0.5, 5, 5)
    assert c.short_name == "model" and str(c.dtype) == "torch.float32" and c.architecture == "LlamaForCausalLM"
    assert "max_length" in PipelineConfig.help() and c.devices[0].type == "cpu"
    for key, value in (("serialized_model_path", "m.bin"), ("save_to_serialized_model_path", "m.bin"),
                       ("max_num_steps", 4), ("pad_to_multiple_of", 8), ("max_ce_batch_size", 4), ("enable_echo", False)):
        with pytest.raises(ValueError) as e:
            PipelineConfig.from_sources({key: value})
        assert isinstance(e.value, ConfigError) and "\n" not in str(e.value) and key in str(e.value)
        assert "not supported (" in str(e.value)


def test_config_file_is_read_by_the_constructor(tmp_path: Path) -> None:
    from maxcli.pipelines import PipelineConfig
    from maxcli.pipelines.lib.model_config import MAXModelConfig

    f = tmp_path / "c.yaml"
    f.write_text("serve:\n  max_length: 300\n  kv_cache_page_size: 64\n  huggingface_repo_id: a/b\n")
    c = PipelineConfig(config_file=str(f), section_name="serve", max_length=100)
    assert (c.max_length, c.kv_cache.kv_cache_page_size, c.model_path) == (100, 64, "a/b")  # explicit wins
    (tmp_path / "m.yaml").write_text("model_path: x/y\nmax_length: 77\n")
    m = MAXModelConfig(config_file=str(tmp_path / "m.yaml"))
    assert (m.model_path, m.max_length, m.model_name) == ("x/y", 77, "x/y")
    assert c.model.max_length == 100 and c.model.model_path == "a/b"


def test_model_config_methods(smollm2_gguf: Path) -> None:
    import torch

    from maxcli.config import KVCacheStrategy, RopeType, SupportedEncoding, WeightsFormat
    from maxcli.pipelines.lib.model_config import MAXModelConfig

    m = MAXModelConfig(model_path=str(smollm2_gguf))
    assert m.huggingface_config.architectures == ["LlamaForCausalLM"]
    m.validate_and_resolve_quantization_encoding_weight_path(SupportedEncoding.q4_1)
    assert m.quantization_encoding is SupportedEncoding.q4_1
    assert m.graph_quantization_encoding.name == "Q4_1" and m.set_cache_dtype_given_quantization_encoding() is torch.float32
    m.validate_and_resolve_rope_type(RopeType.normal)
    assert m.rope_type is RopeType.normal
    m.validate_and_resolve_with_resolved_quantization_encoding({"q4_1": [KVCacheStrategy.PAGED]}, WeightsFormat.gguf)
    with pytest.raises(ValueError, match="not supported"):
        m.validate_and_resolve_with_resolved_quantization_encoding({"q4_k": ["paged"]}, WeightsFormat.gguf)
    m.create_kv_cache_config(kv_cache_page_size=32)
    assert m.kv_cache.kv_cache_page_size == 32 and m.kv_cache.cache_dtype == "float32"
    assert m.weights_size() == smollm2_gguf.stat().st_size and m.diffusers_config is None
    assert isinstance(m.sampling_params_defaults, dict)
    m.resolve()
    m.validate_lora_compatibility()
    with pytest.raises(ValueError, match="multiple devices"):
        MAXModelConfig(device_specs=[{"id": 0, "device_type": "cpu"}, {"id": 1, "device_type": "cpu"}]).validate_multi_gpu_supported(False)
    for bad in ({"use_subgraphs": False}, {"vision_config_overrides": {"x": 1}}, {"max_length": -1}):
        with pytest.raises(ValueError):
            MAXModelConfig(**bad)


def test_pipeline_config_weight_helpers(smollm2_gguf: Path) -> None:
    from maxcli.config import WeightsFormat
    from maxcli.pipelines import PipelineConfig

    c = PipelineConfig(model_path=str(smollm2_gguf))
    assert c.weights_format is WeightsFormat.gguf and c.weights_size() == smollm2_gguf.stat().st_size
    c.download_weights()
    assert "blk.0.attn_q.weight" in c.load_weights()
    assert c.huggingface_weights_repo().repo_id == str(smollm2_gguf)
    c.update_architecture()
    assert c.architecture == "LlamaForCausalLM"


def test_required_arguments_apply_and_unknown_ones_are_one_line(smollm2_gguf: Path) -> None:
    import dataclasses

    from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig
    from maxcli.pipelines.lib.factory import with_required_arguments

    llama = PIPELINE_REGISTRY.lookup("LlamaForCausalLM")
    arch = dataclasses.replace(llama, required_arguments={"enable_prefix_caching": False, "kv_cache.kv_cache_page_size": 32,
                                                          "kv_cache.kv_cache_num_pages": 40, "max_batch_size": 3})
    c = with_required_arguments(PipelineConfig(model_path=str(smollm2_gguf)), arch)
    assert (c.kv_cache.enable_prefix_caching, c.kv_cache.kv_cache_page_size, c.max_batch_size) == (False, 32, 3)
    assert c.kv_cache.kv_cache_num_pages == 40  # two dotted names of one section both apply
    with pytest.raises(ConfigError) as e:
        with_required_arguments(PipelineConfig(), dataclasses.replace(llama, required_arguments={"some_arg": True}))
    assert "some_arg" in str(e.value) and "not a PipelineConfig setting" in str(e.value) and "\n" not in str(e.value)


def test_architecture_field_overrides_the_lookup(smollm2_gguf: Path) -> None:
    from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig

    assert PIPELINE_REGISTRY.retrieve_context_type(PipelineConfig(model_path=str(smollm2_gguf))).__name__ == "TextContext"
    with pytest.raises(ValueError, match="no architecture .* NoSuchArch"):
        PIPELINE_REGISTRY.retrieve_pipeline_task(PipelineConfig(model_path=str(smollm2_gguf), architecture="NoSuchArch"))


def test_supported_architecture_as_the_guide_writes_it() -> None:
    """No example_repo_ids (the guide leaves it out); a missing required field is one line."""
    from maxcli.interfaces import PipelineTask
    from maxcli.pipelines.lib import SupportedArchitecture, TextTokenizer, TorchTextGenerationModel

    arch = SupportedArchitecture(name="X", task=PipelineTask.TEXT_GENERATION, default_encoding="bfloat16",
                                 supported_encodings={"bfloat16": ["paged"]}, pipeline_model=TorchTextGenerationModel,
                                 tokenizer=TextTokenizer, default_weights_format="safetensors")
    assert arch.example_repo_ids == [] and arch.tokenizer_cls is TextTokenizer
    with pytest.raises(TypeError, match="missing required field.*pipeline_model"):
        SupportedArchitecture(name="X", task="text_generation", default_encoding="bfloat16",
                              supported_encodings={"bfloat16": ["paged"]}, tokenizer=TextTokenizer,
                              default_weights_format="safetensors")


def test_pipeline_model_sizing_classmethods(smollm2_gguf: Path) -> None:
    """get_num_layers / get_kv_params / estimate_* answer before any model exists, and agree with the
    KV cache the loader then builds."""
    import torch

    from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig
    from maxcli.pipelines.lib.pipeline_model import PipelineModel

    config = PipelineConfig(model_path=str(smollm2_gguf), max_length=512, max_batch_size=2)
    hf = config.huggingface_config
    model_cls = PIPELINE_REGISTRY.lookup("LlamaForCausalLM").pipeline_model
    params = model_cls.get_kv_params(hf, 1, config.kv_cache, torch.float32)
    assert (model_cls.get_num_layers(hf), params.num_layers, params.n_kv_heads, params.head_dim) == (30, 30, 3, 64)
    generic = PipelineModel.get_kv_params(hf, 1, config.kv_cache)  # the defaults read the same standard fields
    assert (generic.num_layers, generic.n_kv_heads, generic.head_dim) == (30, 3, 64)
    assert model_cls.estimate_weights_size(config) == smollm2_gguf.stat().st_size
    kv_bytes = model_cls.estimate_kv_cache_size(config, hf)
    assert kv_bytes == 2 * 32 * params.bytes_per_page  # a full batch of 2 x 512 tokens in 16-token pages
    _, pipeline = PIPELINE_REGISTRY.retrieve(config)
    assert pipeline.kv_manager.total_num_pages * params.bytes_per_page == kv_bytes
