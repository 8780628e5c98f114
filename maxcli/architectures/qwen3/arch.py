"""Qwen3ForCausalLM: registry entries (text generation, and Qwen3-Embedding checkpoints)."""

import dataclasses

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import KVCacheStrategy, RopeType, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.core import EmbeddingsContext
from maxcli.pipelines.lib.registry import SupportedArchitecture
from maxcli.pipelines.lib.tokenizer import TextTokenizer
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .embedding_model import Qwen3EmbeddingModel
from .model import Qwen3ForCausalLM


class Qwen3Model(TorchTextGenerationModel):
    module_class = Qwen3ForCausalLM


qwen3_arch = decoder_architecture(
    Qwen3Model,
    example_repo_ids=["Qwen/Qwen3-0.6B", "Qwen/Qwen3-8B"],
    default_encoding=SupportedEncoding.bfloat16,
    rope_type=RopeType.neox,
    weight_adapters=weight_adapters,
)


# Qwen3-Embedding checkpoints name Qwen3ForCausalLM too; the task picks this entry (last-token pooling).
qwen3_embedding_arch = SupportedArchitecture(
    name="Qwen3ForCausalLM",
    task=PipelineTask.EMBEDDINGS_GENERATION,
    example_repo_ids=["Qwen/Qwen3-Embedding-0.6B"],
    default_encoding=SupportedEncoding.bfloat16,
    supported_encodings={
        SupportedEncoding.float32: [KVCacheStrategy.MODEL_DEFAULT],
        SupportedEncoding.bfloat16: [KVCacheStrategy.MODEL_DEFAULT],
    },
    pipeline_model=Qwen3EmbeddingModel,
    tokenizer=TextTokenizer,
    context_type=EmbeddingsContext,
    default_weights_format=WeightsFormat.safetensors,
    weight_adapters={WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict},
)

# A folder saved from transformers' Qwen3Model (no LM head) names that class; it embeds the same way.
qwen3_model_embedding_arch = dataclasses.replace(qwen3_embedding_arch, name="Qwen3Model")
