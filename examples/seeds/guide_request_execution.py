# MAX model-pipeline guide, "Request execution example": `max.` -> `maxcli.`; the one other edit is the
# model: a local GGUF file (run from the folder that holds it) instead of the hub id.
import asyncio
from maxcli.interfaces import RequestID, TextGenerationInputs, TextGenerationRequest
from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig
from maxcli.pipelines.core import TextContext

# 1. Configure and retrieve the pipeline and tokenizer
config = PipelineConfig(
    model_path="SmolLM2-135M-Instruct.Q4_1.gguf",
    max_length=512,
)
tokenizer, pipeline = PIPELINE_REGISTRY.retrieve(config)

# 2. Get the KV cache manager from the pipeline
kv_cache_manager = pipeline.kv_managers[0]

# 3. Create a request with the text prompt
request = TextGenerationRequest(
    request_id=RequestID(),
    model_name=config.model_path,
    prompt="Explain how neural networks work",
)

# 4. Create a context object (tokenization happens here)
context = asyncio.run(tokenizer.new_context(request))

# 5. Allocate space in the KV cache for this request
kv_cache_manager.claim(context.request_id)

# 6. Run the generation loop
generated_text = ""
while True:
    # Allocate KV cache for the next token
    kv_cache_manager.alloc(context, num_steps=1)

    # Execute the pipeline with the current context
    inputs = TextGenerationInputs[TextContext](
        batches=[{context.request_id: context}],
        num_steps=1,
    )
    output = pipeline.execute(inputs)

    # Decode and accumulate generated tokens
    for token in output[context.request_id].tokens:
        generated_text += asyncio.run(
            tokenizer.decode(token, skip_special_tokens=True)
        )

    # Check if generation is complete
    if output[context.request_id].is_done:
        break

print(generated_text)
