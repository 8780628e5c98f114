from . import weight_adapters
from .arch import mistral_arch

ARCHITECTURES = [mistral_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
