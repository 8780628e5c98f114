# MAX registry reference, SupportedArchitecture "Example": `max.` -> `maxcli.`. The example refers to
# names it does not define (MyModel, MyModelConfig, weight_adapters, and the classes it passes); the block
# marked below supplies them from custom_architectures/my_model and maxcli, and is the one addition.

# -- not on the page: the names its example refers to -------------------------------------------------
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "custom_architectures"))
from my_model import weight_adapters  # noqa: E402
from my_model.model import MyModel  # noqa: E402

from maxcli.graph.weights import WeightsFormat  # noqa: E402
from maxcli.interfaces import PipelineTask  # noqa: E402
from maxcli.pipelines.core import TextContext  # noqa: E402
from maxcli.pipelines.lib import SupportedArchitecture, TextTokenizer  # noqa: E402


class MyModelConfig:
    """An architecture config class (the ArchConfig protocol): built from a PipelineConfig."""

    @classmethod
    def initialize(cls, pipeline_config):
        return cls()


# -- the page -----------------------------------------------------------------------------------------
my_architecture = SupportedArchitecture(
    name="MyModelForCausalLM",  # Must match your Hugging Face model class name
    example_repo_ids=[
        "your-org/your-model-name",  # Add example model repository IDs
    ],
    default_encoding="q4_k",
    supported_encodings={
        "q4_k": ["paged"],
        "bfloat16": ["paged"],
        # Add other encodings your model supports
    },
    pipeline_model=MyModel,
    tokenizer=TextTokenizer,
    context_type=TextContext,
    config=MyModelConfig,  # Architecture-specific config class
    default_weights_format=WeightsFormat.safetensors,
    rope_type="none",
    weight_adapters={
        WeightsFormat.safetensors: weight_adapters.convert_safetensor_state_dict,
        # Add other weight formats if needed
    },
    multi_gpu_supported=True,  # Set based on your implementation capabilities
    required_arguments={"some_arg": True},
    task=PipelineTask.TEXT_GENERATION,
)
