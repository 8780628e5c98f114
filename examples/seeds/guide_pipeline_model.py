# MAX model-pipeline guide, "Pipeline model": `max.` -> `maxcli.`, nothing else changed.
from maxcli.pipelines.lib import PipelineModel, ModelInputs, ModelOutputs

class MyModel(PipelineModel):

    @classmethod
    def calculate_max_seq_len(cls, pipeline_config, huggingface_config) -> int:
        """Return the maximum sequence length this model supports."""
        ...

    def execute(self, model_inputs: ModelInputs) -> ModelOutputs:
        """Run inference on the compiled model."""
        ...

    def prepare_initial_token_inputs(
        self, context_batch, kv_cache_inputs=None, return_n_logits=1
    ) -> ModelInputs:
        """Prepare inputs for the first forward pass (prefill)."""
        ...

    def prepare_next_token_inputs(
        self, next_tokens, prev_model_inputs
    ) -> ModelInputs:
        """Prepare inputs for subsequent forward passes (decode)."""
        ...
