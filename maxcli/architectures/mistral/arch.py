"""MistralForCausalLM: registry entry."""

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import RopeType, SupportedEncoding
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .model import MistralForCausalLM


class MistralModel(TorchTextGenerationModel):
    module_class = MistralForCausalLM


mistral_arch = decoder_architecture(
    MistralModel,
    example_repo_ids=["mistralai/Mistral-7B-Instruct-v0.3"],
    default_encoding=SupportedEncoding.bfloat16,
    rope_type=RopeType.normal,
    weight_adapters=weight_adapters,
)
