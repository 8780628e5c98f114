# gpt2/__init__.py
from .arch import gpt2_arch

ARCHITECTURES = [gpt2_arch]
