from . import weight_adapters
from .arch import phi3_arch

ARCHITECTURES = [phi3_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
