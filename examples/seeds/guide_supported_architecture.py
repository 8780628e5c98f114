# MAX model-pipeline guide, "Supported architecture": `max.` -> `maxcli.`. The snippet uses three names it
# does not define (Llama3Model and the two converters); the import block marked below supplies maxcli's,
# and is the one addition. Everything from the guide's first import down is as written.

# -- not in the guide: the names its snippet refers to ------------------------------------------------
from maxcli.architectures.llama3.arch import Llama3Model
from maxcli.architectures.llama3.weight_adapters import convert_gguf_state_dict, convert_safetensor_state_dict

# -- the guide ----------------------------------------------------------------------------------------
from maxcli.graph.weights import WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.nn.legacy.kv_cache import KVCacheStrategy
from maxcli.pipelines.lib import (
    RopeType,
    SupportedArchitecture,
    SupportedEncoding,
    TextTokenizer,
)

llama_arch = SupportedArchitecture(
    # Must match the HuggingFace model class name
    name="LlamaForCausalLM",

    # The type of task this architecture supports
    task=PipelineTask.TEXT_GENERATION,

    # Example models that use this architecture
    example_repo_ids=[
        "meta-llama/Llama-3.1-8B-Instruct",
        "meta-llama/Llama-3.2-3B-Instruct",
    ],

    # Quantization support
    default_encoding=SupportedEncoding.q4_k,
    supported_encodings={
        SupportedEncoding.bfloat16: [KVCacheStrategy.PAGED],
        SupportedEncoding.q4_k: [KVCacheStrategy.PAGED],
    },

    # Implementation classes
    pipeline_model=Llama3Model,
    tokenizer=TextTokenizer,

    # Weight handling
    default_weights_format=WeightsFormat.safetensors,
    weight_adapters={
        WeightsFormat.safetensors: convert_safetensor_state_dict,
        WeightsFormat.gguf: convert_gguf_state_dict,
    },

    # Architecture-specific settings
    rope_type=RopeType.normal,
    multi_gpu_supported=True,
)
