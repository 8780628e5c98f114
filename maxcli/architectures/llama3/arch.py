"""LlamaForCausalLM: registry entry."""

from maxcli.architectures.common import DECODER_ENCODINGS
from maxcli.config.enums import RopeType, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.lib.pipeline_model import TorchTextGenerationModel
from maxcli.pipelines.lib.registry import SupportedArchitecture
from maxcli.pipelines.lib.tokenizer import TextTokenizer

from . import weight_adapters
from .model import LlamaForCausalLM


class Llama3Model(TorchTextGenerationModel):
    module_class = LlamaForCausalLM


llama3_arch = SupportedArchitecture(
    name="LlamaForCausalLM",
    task=PipelineTask.TEXT_GENERATION,
    example_repo_ids=["meta-llama/Llama-3.1-8B-Instruct", "meta-llama/Llama-3.2-1B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"],
    default_encoding=SupportedEncoding.q4_k,
    supported_encodings=DECODER_ENCODINGS,
    pipeline_model=Llama3Model,
    tokenizer=TextTokenizer,
    default_weights_format=WeightsFormat.safetensors,
    rope_type=RopeType.normal,
    weight_adapters={
        WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict,
        WeightsFormat.gguf: weight_adapters.convert_gguf_state_dict,
    },
    multi_gpu_supported=True,
)
