"""Values several built-in architectures share."""

from maxcli.config.enums import KVCacheStrategy, SupportedEncoding

_PAGED = [KVCacheStrategy.PAGED]

# Every encoding the weight loaders read for decoder LLMs: float safetensors and GGUF block formats.
DECODER_ENCODINGS: dict[SupportedEncoding, list[KVCacheStrategy]] = {
    enc: list(_PAGED)
    for enc in (
        SupportedEncoding.float32,
        SupportedEncoding.bfloat16,
        SupportedEncoding.float16,
        SupportedEncoding.q4_0,
        SupportedEncoding.q4_1,
        SupportedEncoding.q5_0,
        SupportedEncoding.q8_0,
        SupportedEncoding.q4_k,
        SupportedEncoding.q5_k,
        SupportedEncoding.q6_k,
    )
}
