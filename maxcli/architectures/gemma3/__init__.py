from .arch import gemma3_arch

ARCHITECTURES = [gemma3_arch]
