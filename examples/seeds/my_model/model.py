# my_model/model.py — the guide gives __init__.py and arch.py of this folder verbatim but leaves model.py
# to the reader; this one is the worked example of custom_architectures/my_model (a Llama variant whose
# logits are scaled by config.json's logit_scale).
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
