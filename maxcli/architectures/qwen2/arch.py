"""Qwen2ForCausalLM: registry entry."""

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import RopeType, SupportedEncoding
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .model import Qwen2ForCausalLM


class Qwen2Model(TorchTextGenerationModel):
    module_class = Qwen2ForCausalLM


qwen2_arch = decoder_architecture(
    Qwen2Model,
    example_repo_ids=["Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct"],
    default_encoding=SupportedEncoding.bfloat16,
    rope_type=RopeType.neox,
    weight_adapters=weight_adapters,
)
