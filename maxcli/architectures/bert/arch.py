"""BertModel (sentence-embedding models such as all-MiniLM-L6-v2): registry entry."""

from maxcli.config.enums import KVCacheStrategy, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.core import EmbeddingsContext
from maxcli.pipelines.lib.registry import SupportedArchitecture
from maxcli.pipelines.lib.tokenizer import TextTokenizer

from . import weight_adapters
from .model import BertEmbeddingModel

bert_arch = SupportedArchitecture(
    name="BertModel",
    task=PipelineTask.EMBEDDINGS_GENERATION,
    example_repo_ids=["sentence-transformers/all-MiniLM-L6-v2", "BAAI/bge-small-en-v1.5"],
    default_encoding=SupportedEncoding.float32,
    supported_encodings={
        SupportedEncoding.float32: [KVCacheStrategy.MODEL_DEFAULT],
        SupportedEncoding.bfloat16: [KVCacheStrategy.MODEL_DEFAULT],
        SupportedEncoding.float16: [KVCacheStrategy.MODEL_DEFAULT],
    },
    pipeline_model=BertEmbeddingModel,
    tokenizer=TextTokenizer,
    context_type=EmbeddingsContext,
    default_weights_format=WeightsFormat.safetensors,
    weight_adapters={WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict},
)
