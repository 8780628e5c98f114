"""LoRA adapters: PEFT folders read (adapter.py) and served from slots beside the base model (manager.py)."""

from maxcli.lora.adapter import LoRAAdapter, LoRAError, load_adapter
from maxcli.lora.manager import LoRAManager, UnknownAdapter

__all__ = ["LoRAAdapter", "LoRAError", "LoRAManager", "UnknownAdapter", "load_adapter"]
