"""Phi3ForCausalLM: registry entry."""

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import RopeType, SupportedEncoding
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .model import Phi3ForCausalLM


class Phi3Model(TorchTextGenerationModel):
    module_class = Phi3ForCausalLM


phi3_arch = decoder_architecture(
    Phi3Model,
    example_repo_ids=["microsoft/Phi-3-mini-4k-instruct", "microsoft/Phi-3.5-mini-instruct"],
    default_encoding=SupportedEncoding.bfloat16,
    rope_type=RopeType.longrope,
    weight_adapters=weight_adapters,
)
