"""PipelineRegistry: registration, overrides, (name, task) table, lookups by a repo's config."""

import json
from pathlib import Path

import pytest

from maxcli.config import PipelineConfig, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines import PIPELINE_REGISTRY, PipelineRegistry, SupportedArchitecture
from maxcli.pipelines.core import EmbeddingsContext, TextContext
from maxcli.pipelines.lib import ArchitectureNotFound, HuggingFaceRepo

SEVEN = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Gemma3ForCausalLM", "Phi3ForCausalLM", "BertModel",
}


def make_arch(name="MyArch", task=PipelineTask.TEXT_GENERATION, repo="org/a") -> SupportedArchitecture:
    base = PIPELINE_REGISTRY.architectures["LlamaForCausalLM"]
    return SupportedArchitecture(
        name=name, task=task, example_repo_ids=[repo], default_encoding="float32",
        supported_encodings={"float32": ["paged"]}, pipeline_model=base.pipeline_model,
        tokenizer=base.tokenizer, default_weights_format=WeightsFormat.safetensors,
    )


def test_builtins_registered():
    assert SEVEN <= set(PIPELINE_REGISTRY.supported_names())
    bert = PIPELINE_REGISTRY.architectures["BertModel"]
    assert bert.task is PipelineTask.EMBEDDINGS_GENERATION and bert.context_type is EmbeddingsContext
    llama = PIPELINE_REGISTRY.architectures["LlamaForCausalLM"]
    assert llama.context_type is TextContext and SupportedEncoding.q4_1 in llama.supported_encodings


def test_register_override_and_reset():
    reg = PipelineRegistry([make_arch()])
    with pytest.raises(ValueError, match="already registered"):
        reg.register(make_arch(repo="org/b"))
    reg.register(make_arch(repo="org/b"), allow_override=True)
    assert reg.architectures["MyArch"].example_repo_ids == ["org/b"]
    reg.reset()
    assert reg.supported_names() == []


def test_same_name_other_task_goes_to_secondary_table():
    reg = PipelineRegistry([make_arch()])
    reg.register(make_arch(task=PipelineTask.EMBEDDINGS_GENERATION, repo="org/emb"))
    assert reg._lookup("MyArch", PipelineTask.EMBEDDINGS_GENERATION).example_repo_ids == ["org/emb"]
    assert reg._lookup("MyArch", PipelineTask.TEXT_GENERATION).example_repo_ids == ["org/a"]
    assert reg._lookup("MyArch", None).task is PipelineTask.TEXT_GENERATION
    assert len(reg.all()) == 2


def test_default_encoding_must_be_supported():
    with pytest.raises(ValueError, match="default_encoding"):
        SupportedArchitecture(
            name="X", task="text_generation", example_repo_ids=[], default_encoding="q4_k",
            supported_encodings={"float32": ["paged"]}, pipeline_model=object, tokenizer=object,
            default_weights_format="safetensors",
        )


def write_config(folder: Path, archs: list[str], model_type: str = "llama") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": archs, "model_type": model_type}))
    return folder


def test_retrieve_architecture_and_task_from_local_repo(tmp_path):
    d = write_config(tmp_path / "m", ["LlamaForCausalLM"])
    repo = HuggingFaceRepo(str(d))
    assert PIPELINE_REGISTRY.retrieve_architecture(repo).name == "LlamaForCausalLM"
    cfg = PipelineConfig(model_path=str(d))
    assert PIPELINE_REGISTRY.retrieve_pipeline_task(cfg) is PipelineTask.TEXT_GENERATION
    assert PIPELINE_REGISTRY.retrieve_context_type(cfg) is TextContext
    # cached per repo: same object back
    assert PIPELINE_REGISTRY.get_active_huggingface_config(repo) is PIPELINE_REGISTRY.get_active_huggingface_config(repo)
    assert PIPELINE_REGISTRY.get_active_diffusers_config(repo) is None


def test_unknown_architecture_lists_supported(tmp_path):
    d = write_config(tmp_path / "u", ["WeirdForCausalLM"])
    with pytest.raises(ArchitectureNotFound) as e:
        PIPELINE_REGISTRY.retrieve_pipeline_task(PipelineConfig(model_path=str(d)))
    msg = str(e.value)
    assert "WeirdForCausalLM" in msg and "LlamaForCausalLM" in msg and "\n" not in msg


def test_diffusers_config_when_model_index_present(tmp_path):
    d = write_config(tmp_path / "diff", ["LlamaForCausalLM"])
    (d / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert PIPELINE_REGISTRY.get_active_diffusers_config(HuggingFaceRepo(str(d)))["_class_name"] == "StableDiffusionPipeline"
