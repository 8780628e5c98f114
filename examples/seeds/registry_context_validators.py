# MAX registry reference, SupportedArchitecture.context_validators: `max.` -> `maxcli.`. The page writes
# `# ... other fields ...` for the fields a SupportedArchitecture needs; the lines after that comment fill
# them in (with custom_architectures/gpt2's model), and the imports marked below supply the names the page
# uses without importing them. Both are the only additions.

# -- not on the page: the names it refers to ----------------------------------------------------------
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "custom_architectures"))
from gpt2.model import GPT2Model  # noqa: E402

from maxcli.interfaces import InputError, PipelineTask  # noqa: E402
from maxcli.pipelines.core import TextAndVisionContext, TextContext  # noqa: E402
from maxcli.pipelines.lib import SupportedArchitecture, TextTokenizer  # noqa: E402


# -- the page -----------------------------------------------------------------------------------------
def validate_single_image(context: TextContext | TextAndVisionContext) -> None:
    if isinstance(context, TextAndVisionContext):
        if context.pixel_values and len(context.pixel_values) > 1:
            raise InputError(f"Model supports only 1 image, got {len(context.pixel_values)}")

my_architecture = SupportedArchitecture(
    # ... other fields ...
    name="MyVisionModelForCausalLM", task=PipelineTask.TEXT_GENERATION, default_encoding="float32",
    supported_encodings={"float32": ["paged"]}, pipeline_model=GPT2Model, tokenizer=TextTokenizer,
    default_weights_format="safetensors", context_type=TextAndVisionContext,
    context_validators=[validate_single_image],
)
