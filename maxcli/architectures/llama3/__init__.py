from . import weight_adapters
from .arch import llama3_arch

ARCHITECTURES = [llama3_arch]
GGUF_ARCHITECTURES = weight_adapters.gguf_architectures()  # how this family's GGUF files read
