from .arch import mistral_arch

ARCHITECTURES = [mistral_arch]
