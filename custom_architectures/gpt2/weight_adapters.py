# gpt2/weight_adapters.py — HF GPT-2 checkpoint names and layouts -> the names of model.GPT2.
#
# - Checkpoints saved from GPT2LMHeadModel prefix everything with "transformer."; the hub's original gpt2
#   files do not. Both load.
# - GPT-2 stores its projections as Conv1D, weight [in, out]; maxcli.nn.Linear holds [out, in] (x W^T),
#   so c_attn / c_proj / c_fc weights are transposed.
# - attn.bias / attn.masked_bias are the causal-mask buffers of old checkpoints, not weights; lm_head is
#   tied to wte.
from typing import Any

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")


def convert_safetensor_state_dict(state: Any, huggingface_config: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, weight in state.items():
        name = name.removeprefix("transformer.")
        if name.endswith(_BUFFERS) or name == "lm_head.weight":
            continue
        if name.endswith(_CONV1D):
            weight = weight.to_tensor().t().contiguous()
        out[name] = weight
    return out
