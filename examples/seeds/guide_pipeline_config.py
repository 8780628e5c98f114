# MAX model-pipeline guide, "Configuration flow": `max.` -> `maxcli.`, nothing else changed (the config is
# built, not loaded: no model is read).
from maxcli.pipelines import PipelineConfig

config = PipelineConfig(
    # Model specification (Hugging Face repo ID or local path)
    model_path="meta-llama/Llama-3.1-8B-Instruct",

    # Sequence limits
    max_length=4096,

    # Batching
    max_batch_size=32,
)
