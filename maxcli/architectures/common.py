"""Values several built-in architectures share."""

from types import ModuleType

from maxcli.config.enums import KVCacheStrategy, RopeType, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.lib.registry import SupportedArchitecture
from maxcli.pipelines.lib.tokenizer import TextTokenizer

_PAGED = [KVCacheStrategy.PAGED]

# Every encoding the weight loaders read for decoder LLMs: float safetensors and GGUF block formats.
DECODER_ENCODINGS: dict[SupportedEncoding, list[KVCacheStrategy]] = {
    enc: list(_PAGED)
    for enc in (
        SupportedEncoding.float32,
        SupportedEncoding.bfloat16,
        SupportedEncoding.float16,
        SupportedEncoding.q4_0,
        SupportedEncoding.q4_1,
        SupportedEncoding.q5_0,
        SupportedEncoding.q8_0,
        SupportedEncoding.q4_k,
        SupportedEncoding.q5_k,
        SupportedEncoding.q6_k,
    )
}


def decoder_architecture(
    pipeline_model: type,
    example_repo_ids: list[str],
    default_encoding: SupportedEncoding,
    rope_type: RopeType,
    weight_adapters: ModuleType,
) -> SupportedArchitecture:
    """The registry entry of a native decoder LLM: named after its module class, paged KV cache for every
    encoding the loaders read, safetensors and GGUF adapters from the folder's weight_adapters module."""
    return SupportedArchitecture(
        name=pipeline_model.module_class.__name__,
        task=PipelineTask.TEXT_GENERATION,
        example_repo_ids=example_repo_ids,
        default_encoding=default_encoding,
        supported_encodings=DECODER_ENCODINGS,
        pipeline_model=pipeline_model,
        tokenizer=TextTokenizer,
        default_weights_format=WeightsFormat.safetensors,
        rope_type=rope_type,
        weight_adapters={
            WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict,
            WeightsFormat.gguf: weight_adapters.convert_gguf_state_dict,
        },
        multi_gpu_supported=True,
    )
