from .arch import bert_arch

ARCHITECTURES = [bert_arch]
