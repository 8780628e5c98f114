# gpt2/arch.py — written as MAX's model-pipeline guide writes my_model/arch.py, `max.` -> `maxcli.`
from maxcli.graph.weights import WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.nn.legacy.kv_cache import KVCacheStrategy
from maxcli.pipelines.lib import (
    SupportedArchitecture,
    SupportedEncoding,
    TextTokenizer,
)

from . import weight_adapters
from .model import GPT2Model

gpt2_arch = SupportedArchitecture(
    name="GPT2LMHeadModel",  # Must match HuggingFace config
    task=PipelineTask.TEXT_GENERATION,
    example_repo_ids=["openai-community/gpt2", "distilbert/distilgpt2"],
    default_encoding=SupportedEncoding.float32,
    supported_encodings={
        SupportedEncoding.float32: [KVCacheStrategy.PAGED],
        SupportedEncoding.bfloat16: [KVCacheStrategy.PAGED],
    },
    pipeline_model=GPT2Model,
    tokenizer=TextTokenizer,
    default_weights_format=WeightsFormat.safetensors,
    weight_adapters={WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict},
)
