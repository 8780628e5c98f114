"""Adding an architecture with GGUF support touches only its own package: a package outside maxcli,
installed the standard way (an entry point in the `maxcli.architectures` group), brings a family whose
GGUF files carry a name maxcli has never seen; the registry finds it, its GGUF_ARCHITECTURES reads the
file's config, its weight adapter names the tensors, and the pipeline runs a step on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weights"))
from gguf_factory import write_tiny_gguf  # noqa: E402

PLUGIN = '''
import dataclasses

from maxcli.architectures.llama3.arch import llama3_arch
from maxcli.architectures.llama3.model import LlamaForCausalLM
from maxcli.architectures.llama3.weight_adapters import gguf_state_dict
from maxcli.config.enums import RopeType
from maxcli.pipelines.lib import TorchTextGenerationModel
from maxcli.weights.gguf_config import GGUFArchitecture


class MyFamForCausalLM(LlamaForCausalLM):
    """A Llama-shaped family of its own."""


class MyFamModel(TorchTextGenerationModel):
    module_class = MyFamForCausalLM


def convert_gguf_state_dict(state, hf_config, pipeline_config=None):
    return gguf_state_dict(state, hf_config, pipeline_config, RopeType.neox)


ARCHITECTURES = [dataclasses.replace(llama3_arch, name="MyFamForCausalLM", pipeline_model=MyFamModel,
                                     rope_type=RopeType.neox,
                                     weight_adapters={"gguf": convert_gguf_state_dict})]
GGUF_ARCHITECTURES = [GGUFArchitecture("myfam", "llama", "MyFamForCausalLM")]
'''

CHECK = '''
import sys
import torch
from maxcli.config import PipelineConfig
from maxcli.interfaces import RequestID, SamplingParams
from maxcli.pipelines import PIPELINE_REGISTRY
from maxcli.pipelines.core import TextContext
from maxcli.pipelines.lib.factory import build_text_generation_pipeline, resolve_for_architecture
from maxcli.pipelines.lib.hf_repo import huggingface_repo_for

config = PipelineConfig(model_path=sys.argv[1])
repo = huggingface_repo_for(config)
hf_config = PIPELINE_REGISTRY.get_active_huggingface_config(repo)
arch = PIPELINE_REGISTRY.retrieve_architecture(repo)
assert arch.name == "MyFamForCausalLM" and hf_config.architectures == ["MyFamForCausalLM"], arch
pipeline = build_text_generation_pipeline(resolve_for_architecture(config, arch, hf_config), arch)
assert type(pipeline.pipeline_model.module).__name__ == "MyFamForCausalLM"
ctx = TextContext(RequestID(), [1, 5, 9, 3], max_length=16, sampling_params=SamplingParams(temperature=0.0))
pipeline.kv_manager.claim(ctx.request_id)
pipeline.kv_manager.alloc(ctx)
step = pipeline.forward_and_sample([(ctx, 4)])
assert ctx.request_id in step.sampled
print("ok", step.sampled[ctx.request_id])
'''


def test_an_installed_package_adds_a_gguf_family(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "myfam").mkdir(parents=True)
    (site / "myfam" / "__init__.py").write_text(PLUGIN)
    dist = site / "myfam-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myfam\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[maxcli.architectures]\nmyfam = myfam\n")
    gguf = write_tiny_gguf(tmp_path / "tiny-myfam.gguf", "myfam")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, "-c", CHECK, str(gguf)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stderr[-3000:]
    # without the package, the same file is a one-line "not supported" naming the installed families
    bare = subprocess.run([sys.executable, "-c", CHECK, str(gguf)], capture_output=True, text=True, timeout=300)
    assert bare.returncode != 0 and "GGUF architecture 'myfam' is not supported" in bare.stderr
