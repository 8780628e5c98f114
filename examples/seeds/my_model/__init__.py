# my_model/__init__.py
from .arch import my_arch

ARCHITECTURES = [my_arch]
