from . import weight_adapters
from .arch import gemma3_arch

ARCHITECTURES = [gemma3_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
