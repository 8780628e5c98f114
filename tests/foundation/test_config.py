"""PipelineConfig: defaults, validation, YAML precedence and every error case (one-line messages)."""

from pathlib import Path

import pytest

from maxcli.config import ConfigError, KVCacheStrategy, PipelineConfig, SupportedEncoding
from maxcli.driver import DeviceSpec


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_derived_values():
    c = PipelineConfig(model_path="m")
    assert c.device_specs == [DeviceSpec.cpu()]
    assert c.kv_cache.cache_strategy is KVCacheStrategy.PAGED
    assert c.kv_cache.enable_prefix_caching is True
    assert c.cache_dtype == "float32"
    assert PipelineConfig(quantization_encoding="bfloat16").cache_dtype == "bfloat16"
    assert PipelineConfig(quantization_encoding="q4_k").cache_dtype == "float32"
    assert PipelineConfig(quantization_encoding="q4_k", kv_cache={"cache_dtype": "bfloat16"}).cache_dtype == "bfloat16"
    assert c.model_name == "m" and PipelineConfig(model_path="m", served_model_name="s").model_name == "s"


def test_devices_parse():
    assert PipelineConfig(device_specs="gpu:0,1").device_specs == [DeviceSpec.accelerator(0), DeviceSpec.accelerator(1)]
    assert PipelineConfig(device_specs="gpu").device_specs == [DeviceSpec.accelerator(0)]
    with pytest.raises(ValueError):
        PipelineConfig(device_specs="tpu:0")


def test_yaml_precedence_flag_over_file_over_default(tmp_path):
    f = write(
        tmp_path,
        "model_path: from-file\nmax_length: 300\nkv_cache:\n  kv_cache_page_size: 32\ntemperature: 0.5\n",
    )
    c = PipelineConfig.from_sources({"max_length": 100}, f)
    assert c.model_path == "from-file"  # file over default
    assert c.max_length == 100  # flag over file
    assert c.kv_cache.kv_cache_page_size == 32  # nested section
    assert c.sampling.temperature == 0.5  # flat name of a section field
    assert c.max_batch_size == PipelineConfig.model_fields["max_batch_size"].default  # default
    c2 = PipelineConfig.from_sources({"kv_cache_page_size": 8}, f)
    assert c2.kv_cache.kv_cache_page_size == 8


def test_yaml_sections_and_flat_names(tmp_path):
    f = write(tmp_path, "dev:\n  model: a\n  devices: cpu\n  kv-cache-page-size: 64\nprod:\n  model: b\n")
    assert PipelineConfig.from_sources({}, f, "dev").kv_cache.kv_cache_page_size == 64
    assert PipelineConfig.from_sources({}, f, "prod").model_path == "b"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("bogus_key: 1\n", "unknown key 'bogus_key'"),
        ("max_length: abc\n", "max_length"),
        ("max_length: -5\n", "max_length must be non-negative"),
        ("kv_cache:\n  nope: 1\n", "unknown key 'kv_cache.nope'"),
        ("kv_cache: 3\n", "kv_cache: expected a mapping"),
        ("quantization_encoding: q9_z\n", "quantization_encoding"),
        ("- a\n- b\n", "expected a mapping"),
        ("a: [unclosed\n", "invalid YAML"),
        ("top_p: 1.5\n", "top_p"),
    ],
)
def test_yaml_errors_are_one_line_and_name_key_and_file(tmp_path, text, expected):
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        PipelineConfig.from_sources({}, f)
    msg = str(e.value)
    assert expected in msg and "\n" not in msg
    assert str(f) in msg


def test_missing_file_and_section(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        PipelineConfig.from_sources({}, tmp_path / "nope.yaml")
    f = write(tmp_path, "a:\n  model: x\n")
    with pytest.raises(ConfigError, match="no section 'b'"):
        PipelineConfig.from_sources({}, f, "b")


def test_flag_errors_name_the_flag_source():
    with pytest.raises(ConfigError, match=r"^flags: max_batch_size"):
        PipelineConfig.from_sources({"max_batch_size": 0})
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        PipelineConfig.from_sources({"nope": 1})


def test_encoding_enum_and_file_name_parsing():
    assert SupportedEncoding.parse_from_file_name("SmolLM2-135M-Instruct.Q4_1.gguf") is SupportedEncoding.q4_1
    assert SupportedEncoding.parse_from_file_name("llama-Q4_K_M.gguf") is SupportedEncoding.q4_k
    assert SupportedEncoding.parse_from_file_name("model.bf16.gguf") is SupportedEncoding.bfloat16
    assert SupportedEncoding.q6_k.is_gguf and not SupportedEncoding.gptq.is_gguf


def test_multi_gpu_validation():
    c = PipelineConfig(device_specs="gpu:0,1")
    c.validate_multi_gpu_supported(True, "A")
    with pytest.raises(ConfigError, match="does not support multiple devices"):
        c.validate_multi_gpu_supported(False, "B")
    assert c.tensor_parallel_size == 2  # --devices gpu:0,1 splits the model over both (as MAX does)
    assert PipelineConfig(device_specs="gpu:0,1,2,3", data_parallel_degree=2).tensor_parallel_size == 2
    with pytest.raises(ValueError, match="3 GPU"):
        PipelineConfig(device_specs="gpu:0,1,2", tensor_parallel_size=2)
