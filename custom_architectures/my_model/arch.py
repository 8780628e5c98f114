# my_model/arch.py — the seeds' example with `max.` replaced by `maxcli.`
from maxcli.graph.weights import WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.nn.legacy.kv_cache import KVCacheStrategy
from maxcli.pipelines.lib import (
    SupportedArchitecture,
    SupportedEncoding,
    TextTokenizer,
)

from . import weight_adapters
from .model import MyModel

my_arch = SupportedArchitecture(
    name="MyModelForCausalLM",  # Must match HuggingFace config
    task=PipelineTask.TEXT_GENERATION,
    example_repo_ids=["your-org/my-model"],
    default_encoding=SupportedEncoding.bfloat16,
    supported_encodings={
        SupportedEncoding.bfloat16: [KVCacheStrategy.PAGED],
        SupportedEncoding.float32: [KVCacheStrategy.PAGED],
    },
    pipeline_model=MyModel,
    tokenizer=TextTokenizer,
    default_weights_format=WeightsFormat.safetensors,
    weight_adapters={WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict},
)
