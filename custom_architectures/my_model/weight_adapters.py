# my_model/weight_adapters.py — checkpoint names are HF Llama names, so Llama's adapter applies as is.
from maxcli.architectures.llama3.weight_adapters import convert_safetensor_state_dict

__all__ = ["convert_safetensor_state_dict"]
