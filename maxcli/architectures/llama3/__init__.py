from .arch import llama3_arch

ARCHITECTURES = [llama3_arch]
