# my_model/model.py — a Llama variant whose logits are multiplied by `logit_scale` from config.json
# (as Cohere's models do). Everything else is inherited: subclass, override only what differs.
import torch

from maxcli.architectures.llama3.model import LlamaForCausalLM
from maxcli.pipelines.lib import TorchTextGenerationModel


class MyModelForCausalLM(LlamaForCausalLM):
    def __init__(self, config, dtype=torch.float32):
        super().__init__(config, dtype)
        self.logit_scale = float(getattr(config, "logit_scale", 1.0))

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return super().compute_logits(hidden) * self.logit_scale


class MyModel(TorchTextGenerationModel):
    module_class = MyModelForCausalLM
