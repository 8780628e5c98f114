from . import weight_adapters
from .arch import qwen2_arch

ARCHITECTURES = [qwen2_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
