"""HuggingFaceRepo on local folders / GGUF files and on a local fake hub; encoding resolution."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import save_file

from hub_server import FakeHub, point_hub_at
from maxcli.config.enums import RepoType, SupportedEncoding as E, WeightsFormat
from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo, RepoError, load_hf_config, resolve_encoding_and_weights

REPO = "acme/tiny"


def _bf16_safetensors(path: Path) -> bytes:
    save_file({"w": torch.ones(4, 4, dtype=torch.bfloat16)}, str(path))
    return path.read_bytes()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A fake hub with REPO (main: config + bf16 safetensors; v2 branch: extra file), HF cache in tmp."""
    fake = FakeHub()
    weights = _bf16_safetensors(tmp_path / "w.safetensors")
    config = json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}).encode()
    fake.add_repo(REPO, {"config.json": config, "model.safetensors": weights})
    v2 = fake.add_repo(REPO, {"config.json": config, "model.safetensors": weights, "extra.txt": b"v2"}, branch="v2")
    running = fake.start()
    point_hub_at(monkeypatch, running.url, tmp_path / "hf-cache")
    fake.v2_sha = v2
    yield fake
    running.stop()


def test_online_download_cache_and_revision(hub: FakeHub) -> None:
    repo = HuggingFaceRepo(REPO)
    assert repo.repo_type is RepoType.online
    assert repo.weight_files == {WeightsFormat.safetensors: ["model.safetensors"]}
    assert repo.supported_encodings == [E.bfloat16] and repo.file_exists("config.json")
    assert not repo.file_exists("extra.txt")
    assert repo.size_of("model.safetensors") == len(hub.repos[REPO].commits[hub.repos[REPO].refs["main"]]["model.safetensors"])
    path = repo.download("config.json")
    assert json.loads(path.read_text())["torch_dtype"] == "bfloat16"
    before = len(hub.requests)
    assert HuggingFaceRepo(REPO).download("config.json") == path
    gets = [r for r in hub.requests[before:] if r[1].endswith("/config.json")]
    assert len(gets) <= 1 and all(method == "HEAD" for method, _ in gets)  # body never fetched twice
    assert load_hf_config(repo)["architectures"] == ["LlamaForCausalLM"]
    v2 = HuggingFaceRepo(REPO, revision="v2")
    assert v2.file_exists("extra.txt") and v2.download("extra.txt").read_bytes() == b"v2"
    assert hub.v2_sha in str(v2.download("extra.txt"))
    assert hash(v2) != hash(repo) and HuggingFaceRepo(REPO) == repo


def test_offline_mode_uses_the_cache(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    HuggingFaceRepo(REPO).download("config.json")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    before = len(hub.requests)
    repo = HuggingFaceRepo(REPO)
    assert repo.files == ["config.json"] and repo.download("config.json").is_file()
    assert len(hub.requests) == before
    with pytest.raises(RepoError, match="model.safetensors"):
        repo.download("model.safetensors")


def test_not_found_errors_are_one_line(hub: FakeHub) -> None:
    for call in (lambda: HuggingFaceRepo(REPO).download("missing.bin"),
                 lambda: HuggingFaceRepo("acme/none").files,
                 lambda: HuggingFaceRepo(REPO, revision="nope").download("config.json")):
        with pytest.raises(RepoError) as info:
            call()
        assert "\n" not in str(info.value)


def test_dropped_connection_errors_then_retry_succeeds(hub: FakeHub) -> None:
    path = f"/{REPO}/resolve/main/model.safetensors"
    hub.drop_next[path] = 100  # more than huggingface_hub's internal resume attempts
    repo = HuggingFaceRepo(REPO)
    with pytest.raises(RepoError, match="model.safetensors"):
        repo.download("model.safetensors")
    hub.drop_next[path] = 0
    data = repo.download("model.safetensors").read_bytes()
    assert data == hub.repos[REPO].commits[hub.repos[REPO].refs["main"]]["model.safetensors"]


def test_local_gguf_file_repo_and_resolution(smollm2_gguf: Path) -> None:
    repo = HuggingFaceRepo(str(smollm2_gguf))
    assert repo.repo_type is RepoType.local and repo.files == [smollm2_gguf.name]
    assert repo.formats_available == [WeightsFormat.gguf] and repo.supported_encodings == [E.q4_1]
    assert repo.size_of(smollm2_gguf.name) == smollm2_gguf.stat().st_size
    assert load_hf_config(repo)["architectures"] == ["LlamaForCausalLM"]
    arch = [E.q4_k, E.q4_1, E.float32]
    assert resolve_encoding_and_weights(repo, None, [], E.q4_k, arch) == (E.q4_1, [Path(smollm2_gguf.name)])
    with pytest.raises(RepoError, match="carries q4_1"):
        resolve_encoding_and_weights(repo, E.q4_k, [], E.q4_k, arch)
    with pytest.raises(RepoError, match="carries q4_1; the architecture supports float32"):
        resolve_encoding_and_weights(repo, None, [], E.float32, [E.float32])
    with pytest.raises(RepoError, match="not supported by this architecture"):
        resolve_encoding_and_weights(repo, E.q4_1, [], E.float32, [E.float32])


def test_local_folder_cast_rules(minilm_dir: Path, tmp_path: Path) -> None:
    repo = HuggingFaceRepo(str(minilm_dir))
    assert repo.supported_encodings == [E.float32]
    assert repo.files_for_encoding(E.float32) == {WeightsFormat.safetensors: [Path("model.safetensors")]}
    assert repo.files_for_encoding(E.bfloat16) == {}
    arch = [E.float32, E.bfloat16]
    assert resolve_encoding_and_weights(repo, None, [], E.bfloat16, arch)[0] is E.float32
    with pytest.raises(RepoError, match="carries float32"):
        resolve_encoding_and_weights(repo, E.bfloat16, [], E.float32, arch)
    assert resolve_encoding_and_weights(repo, E.bfloat16, [], E.float32, arch, allow_cast=True) == (
        E.bfloat16, [Path("model.safetensors")])
    explicit = [Path("model.safetensors")]
    with pytest.raises(RepoError, match="holds float32"):
        resolve_encoding_and_weights(repo, E.bfloat16, explicit, E.float32, arch)
    assert resolve_encoding_and_weights(repo, E.bfloat16, explicit, E.float32, arch, allow_cast=True)[0] is E.bfloat16
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(minilm_dir / "config.json", empty / "config.json")
    with pytest.raises(RepoError, match="holds no weight files"):
        resolve_encoding_and_weights(HuggingFaceRepo(str(empty)), None, [], E.float32, arch)


def test_download_shows_a_rich_progress_bar(hub: FakeHub, capfd: pytest.CaptureFixture[str]) -> None:
    HuggingFaceRepo(REPO).download("model.safetensors", force_download=True)
    out, err = capfd.readouterr()
    shown = out + err
    assert "model.safetensors" in shown and "100%" in shown  # rich's bar, rendered when the download ends
