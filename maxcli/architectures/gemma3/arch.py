"""Gemma3ForCausalLM: registry entry."""

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import RopeType, SupportedEncoding
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .model import Gemma3ForCausalLM


class Gemma3Model(TorchTextGenerationModel):
    module_class = Gemma3ForCausalLM


gemma3_arch = decoder_architecture(
    Gemma3Model,
    example_repo_ids=["google/gemma-3-1b-it"],
    default_encoding=SupportedEncoding.bfloat16,
    rope_type=RopeType.neox,
    weight_adapters=weight_adapters,
)
