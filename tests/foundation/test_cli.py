"""The CLI as a user runs it: a real subprocess, help, list-archs, custom architectures, bad input."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]
SEVEN = {
    "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Gemma3ForCausalLM", "Phi3ForCausalLM", "BertModel",
}


def maxcli(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("maxcli")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "maxcli"]
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, input=stdin, cwd=cwd or REPO, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_help_lists_the_subcommands_and_version():
    r = maxcli("--help")
    assert r.returncode == 0
    for cmd in ("generate", "chat", "serve", "list-archs", "warm-cache", "encode", "benchmark"):
        assert cmd in r.stdout
    v = maxcli("--version")
    assert v.returncode == 0 and v.stdout.startswith("maxcli ")


def test_pipeline_flags_are_generated_from_config_fields():
    from maxcli.config import PipelineConfig

    out = maxcli("generate", "--help").stdout
    for flag in ("--model-path", "--quantization-encoding", "--max-length", "--devices", "--kv-cache-page-size",
                 "--enable-prefix-caching", "--temperature", "--top-p", "--config-file", "--section-name"):
        assert flag in out, flag
    # help text comes from the field description (one source)
    desc = PipelineConfig.model_fields["max_batch_input_tokens"].description
    assert desc.split()[0] in out
    assert "--port" in maxcli("serve", "--help").stdout
    assert "--json" in maxcli("warm-cache", "--help").stdout
    assert "--truncate" in maxcli("encode", "--help").stdout


def test_list_archs_json_lists_seven_with_encodings():
    r = maxcli("list-archs", "--json")
    assert r.returncode == 0, r.stderr
    archs = json.loads(r.stdout)["architectures"]
    assert SEVEN <= set(archs)
    for name in SEVEN:
        a = archs[name]
        assert a["task"] and a["example_repo_ids"] and a["supported_encodings"]
    assert "q4_1" in archs["LlamaForCausalLM"]["supported_encodings"]
    assert archs["BertModel"]["task"] == "embeddings_generation"


def test_list_archs_table():
    r = maxcli("list-archs")
    assert r.returncode == 0 and "LlamaForCausalLM" in r.stdout and "BertModel" in r.stdout


def write_override(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent("""
        import dataclasses
        from maxcli.pipelines import PIPELINE_REGISTRY
        from .arch import make

        ARCHITECTURES = [make()]
    """))
    (folder / "arch.py").write_text(textwrap.dedent("""
        import dataclasses
        from maxcli.pipelines import PIPELINE_REGISTRY

        def make():
            base = PIPELINE_REGISTRY.architectures["LlamaForCausalLM"]
            return dataclasses.replace(base, example_repo_ids=["my-org/my-llama"])
    """))
    return folder


def test_custom_architecture_overrides_builtin(tmp_path):
    d = write_override(tmp_path / "override_llama")
    r = maxcli("list-archs", "--json", "--custom-architectures", str(d))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["architectures"]["LlamaForCausalLM"]["example_repo_ids"] == ["my-org/my-llama"]


def test_custom_architecture_errors(tmp_path):
    no_list = tmp_path / "no_list"
    no_list.mkdir()
    (no_list / "__init__.py").write_text("X = 1\n")
    assert_one_line_error(maxcli("list-archs", "--custom-architectures", str(no_list)), "no ARCHITECTURES", str(no_list))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "__init__.py").write_text("import not_a_real_module_xyz\n")
    assert_one_line_error(maxcli("list-archs", "--custom-architectures", str(broken)), "import failed", "not_a_real_module_xyz")
    assert_one_line_error(maxcli("list-archs", "--custom-architectures", str(tmp_path / "missing/")), "no such folder")


def test_seed_example_custom_architecture_registers():
    r = maxcli("list-archs", "--json", "--custom-architectures", str(REPO / "custom_architectures" / "my_model"))
    assert r.returncode == 0, r.stderr
    archs = json.loads(r.stdout)["architectures"]
    assert archs["MyModelForCausalLM"]["task"] == "text_generation"
    assert "bfloat16" in archs["MyModelForCausalLM"]["supported_encodings"]


def test_bad_input_is_one_line_without_traceback(tmp_path):
    assert_one_line_error(maxcli("generate", "--no-such-flag"), "no-such-flag")
    assert_one_line_error(maxcli("generate", "--max-length", "abc"), "max-length")
    assert_one_line_error(maxcli("generate", "--config-file", str(tmp_path / "nope.yaml")), "config file not found")
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_lenght: 5\n")
    r = maxcli("warm-cache", "--config-file", str(bad))
    assert_one_line_error(r, "unknown key 'max_lenght'", str(bad))
    assert r.returncode == 2
    assert_one_line_error(maxcli("serve", "--devices", "tpu"), "invalid device spec")
    assert_one_line_error(maxcli("--log-level", "loud", "list-archs"), "log level")
