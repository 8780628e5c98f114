"""Every code example of the four seed pages, as the file under examples/seeds/ (`max.` -> `maxcli.`; see
scripts/check_seed_examples.py for the verbatim check against the pages), runs on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples" / "seeds"
GUIDE_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the examples' one edit: this local file for the hub id


def run(path: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A folder holding the examples' local model file (a link to the fetched SmolLM2 GGUF)."""
    folder = tmp_path_factory.mktemp("seed_examples")
    (folder / GUIDE_MODEL_FILE).symlink_to(smollm2_gguf)
    return folder


def test_every_page_example_has_a_file() -> None:
    names = {p.name for p in SEEDS.iterdir()}
    assert {"guide_module_mlp.py", "guide_request_execution.py", "guide_registry_retrieve.py",
            "guide_supported_architecture.py", "guide_pipeline_model.py", "guide_pipeline_config.py", "guide_serve.sh",
            "registry_supported_architecture.py", "registry_context_validators.py", "my_model"} <= names


def test_module_example_tracks_parameters_and_moves_to_an_accelerator(model_dir: Path) -> None:
    import torch

    r = run(SEEDS / "guide_module_mlp.py", model_dir)
    assert r.stdout.splitlines() == ["fc1.weight: torch.Size([20, 10])", "fc1.bias: torch.Size([20])",
                                     "fc2.weight: torch.Size([5, 20])", "fc2.bias: torch.Size([5])"]
    if torch.cuda.is_available():
        assert r.returncode == 0, r.stderr
    else:  # no GPU here: the last line stops with the one-line reason, as MAX's Accelerator() does
        assert r.returncode == 1
        assert r.stderr.strip().splitlines()[-1] == \
            "maxcli.driver.DeviceUnavailable: Accelerator(0): this machine has 0 CUDA device(s)"


def test_request_execution_example_generates_text(model_dir: Path) -> None:
    """The page samples at the default temperature (1.0, unseeded): the text varies, and may be a single
    word before the end-of-sequence token; the loop must run to is_done and print it."""
    r = run(SEEDS / "guide_request_execution.py", model_dir)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n") and not r.stderr.strip()


def test_registry_retrieve_example_builds_both_ways(model_dir: Path) -> None:
    r = run(SEEDS / "guide_registry_retrieve.py", model_dir)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("name", ["guide_supported_architecture.py", "guide_pipeline_model.py",
                                  "guide_pipeline_config.py", "registry_supported_architecture.py",
                                  "registry_context_validators.py"])
def test_definition_examples_run(name: str, model_dir: Path) -> None:
    r = run(SEEDS / name, model_dir)
    assert r.returncode == 0, r.stderr


def test_definition_examples_define_what_the_pages_say() -> None:
    import runpy

    from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig
    from maxcli.pipelines.core import TextAndVisionContext
    from maxcli.pipelines.lib import PipelineModel, SupportedEncoding

    llama = runpy.run_path(str(SEEDS / "guide_supported_architecture.py"))["llama_arch"]
    assert llama.default_encoding is SupportedEncoding.q4_k and set(llama.weight_adapters) == {"safetensors", "gguf"}
    my_model = runpy.run_path(str(SEEDS / "guide_pipeline_model.py"))["MyModel"]
    assert issubclass(my_model, PipelineModel) and not my_model.__abstractmethods__
    config = runpy.run_path(str(SEEDS / "guide_pipeline_config.py"))["config"]
    assert (config.max_length, config.max_batch_size) == (4096, 32)
    registry_arch = runpy.run_path(str(SEEDS / "registry_supported_architecture.py"))["my_architecture"]
    assert registry_arch.supported_encodings == {"q4_k": ["paged"], "bfloat16": ["paged"]}
    validated = runpy.run_path(str(SEEDS / "registry_context_validators.py"))
    arch, validator = validated["my_architecture"], validated["validate_single_image"]
    assert arch.context_validators == [validator] and arch.context_type is TextAndVisionContext
    two = TextAndVisionContext(request_id="r", tokens=[1, 2], max_length=8, pixel_values=("a", "b"))
    with pytest.raises(ValueError, match="only 1 image, got 2"):
        validator(two)
    validator(TextAndVisionContext(request_id="r", tokens=[1], max_length=8, pixel_values=("a",)))
    assert PIPELINE_REGISTRY.lookup("MyModelForCausalLM") is None  # defining an architecture registers nothing
    assert PipelineConfig().max_length is None
