from .arch import qwen2_arch

ARCHITECTURES = [qwen2_arch]
