from .arch import phi3_arch

ARCHITECTURES = [phi3_arch]
