# MAX model-pipeline guide, "Pipeline registry": `max.` -> `maxcli.`; the one other edit is the model: a
# local GGUF file (run from the folder that holds it) instead of the hub id.
from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig

# Create configuration for a model
config = PipelineConfig(
    model_path="SmolLM2-135M-Instruct.Q4_1.gguf",
)

# Retrieve tokenizer and compiled pipeline
tokenizer, pipeline = PIPELINE_REGISTRY.retrieve(config)

# Or get a factory for deferred compilation
tokenizer, pipeline_factory = PIPELINE_REGISTRY.retrieve_factory(config)
pipeline = pipeline_factory()  # Compile when ready
