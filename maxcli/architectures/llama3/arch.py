"""LlamaForCausalLM: registry entry."""

from maxcli.architectures.common import decoder_architecture
from maxcli.config.enums import RopeType, SupportedEncoding
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel

from . import weight_adapters
from .model import LlamaForCausalLM


class Llama3Model(TorchTextGenerationModel):
    module_class = LlamaForCausalLM


llama3_arch = decoder_architecture(
    Llama3Model,
    example_repo_ids=["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    default_encoding=SupportedEncoding.q4_k,
    rope_type=RopeType.normal,
    weight_adapters=weight_adapters,
)
