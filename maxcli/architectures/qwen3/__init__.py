from .arch import qwen3_arch, qwen3_embedding_arch, qwen3_model_embedding_arch

ARCHITECTURES = [qwen3_arch, qwen3_embedding_arch, qwen3_model_embedding_arch]
