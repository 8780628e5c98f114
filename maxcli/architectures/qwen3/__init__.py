from . import weight_adapters
from .arch import qwen3_arch, qwen3_embedding_arch, qwen3_model_embedding_arch

ARCHITECTURES = [qwen3_arch, qwen3_embedding_arch, qwen3_model_embedding_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
