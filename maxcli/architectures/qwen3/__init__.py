from .arch import qwen3_arch

ARCHITECTURES = [qwen3_arch]
