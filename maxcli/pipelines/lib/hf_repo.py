"""A model repository, local folder / GGUF file or Hugging Face Hub repo (the seeds' HuggingFaceRepo)."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import huggingface_hub  # a lazy package: its HTTP stack loads only when a hub call is made
import huggingface_hub.constants

from maxcli.config.enums import RepoType, SupportedEncoding, WeightsFormat
from maxcli.weights import GGUFFile

E = SupportedEncoding
_FILE_TYPE_ENCODINGS = {
    gguf.LlamaFileType.ALL_F32: E.float32,
    gguf.LlamaFileType.MOSTLY_F16: E.float16,
    gguf.LlamaFileType.MOSTLY_BF16: E.bfloat16,
    gguf.LlamaFileType.MOSTLY_Q4_0: E.q4_0,
    gguf.LlamaFileType.MOSTLY_Q4_1: E.q4_1,
    gguf.LlamaFileType.MOSTLY_Q5_0: E.q5_0,
    gguf.LlamaFileType.MOSTLY_Q8_0: E.q8_0,
    gguf.LlamaFileType.MOSTLY_Q4_K_S: E.q4_k,
    gguf.LlamaFileType.MOSTLY_Q4_K_M: E.q4_k,
    gguf.LlamaFileType.MOSTLY_Q5_K_S: E.q5_k,
    gguf.LlamaFileType.MOSTLY_Q5_K_M: E.q5_k,
    gguf.LlamaFileType.MOSTLY_Q6_K: E.q6_k,
}
_TENSOR_TYPE_ENCODINGS = {
    gguf.GGMLQuantizationType.F32: E.float32,
    gguf.GGMLQuantizationType.F16: E.float16,
    gguf.GGMLQuantizationType.BF16: E.bfloat16,
    gguf.GGMLQuantizationType.Q4_0: E.q4_0,
    gguf.GGMLQuantizationType.Q4_1: E.q4_1,
    gguf.GGMLQuantizationType.Q5_0: E.q5_0,
    gguf.GGMLQuantizationType.Q8_0: E.q8_0,
    gguf.GGMLQuantizationType.Q4_K: E.q4_k,
    gguf.GGMLQuantizationType.Q5_K: E.q5_k,
    gguf.GGMLQuantizationType.Q6_K: E.q6_k,
}
_DTYPE_ENCODINGS = {"F32": E.float32, "BF16": E.bfloat16, "F16": E.float16, "float32": E.float32,
                    "bfloat16": E.bfloat16, "float16": E.float16, "F8_E4M3": E.float8_e4m3fn}
_CASTABLE = {E.float32, E.bfloat16}


class RepoError(ValueError):
    """A repository, file or encoding that cannot be used as asked."""


def _gguf_file_encoding(path: Path) -> SupportedEncoding:
    """The encoding of a GGUF file: general.file_type, else the type holding most matrix bytes."""
    gf = GGUFFile.open(path)
    file_type = gf.get("general.file_type")
    if isinstance(file_type, int) and file_type in {int(t) for t in _FILE_TYPE_ENCODINGS}:
        return _FILE_TYPE_ENCODINGS[gguf.LlamaFileType(file_type)]
    sizes: Counter[Any] = Counter()
    for w in gf.tensors.values():
        if len(w.shape) >= 2:
            sizes[w.qtype] += w.nbytes
    for qtype, _ in sizes.most_common():
        if qtype in _TENSOR_TYPE_ENCODINGS:
            return _TENSOR_TYPE_ENCODINGS[qtype]
    raise RepoError(f"{path}: no supported tensor encoding in this GGUF file")


@dataclass(frozen=True)
class HuggingFaceRepo:
    """A repo of model files. Hashable: registries cache per (repo_id, revision, trust_remote_code, type).

    repo_type defaults to local when repo_id names an existing path (a folder, or one .gguf file, which
    is then the repo's only weight file), else online (huggingface_hub, honouring HF_HUB_OFFLINE).
    """

    repo_id: str
    trust_remote_code: bool = False
    repo_type: RepoType | None = None
    revision: str = "main"  # after the seeds' three fields, so their positional order holds

    def __post_init__(self) -> None:
        if self.repo_type is None:
            kind = RepoType.local if Path(self.repo_id).expanduser().exists() else RepoType.online
            object.__setattr__(self, "repo_type", kind)
        elif self.repo_type is RepoType.local and not Path(self.repo_id).expanduser().exists():
            raise RepoError(f"local model path does not exist: {self.repo_id}")

    # ---- files ------------------------------------------------------------------------------------

    @property
    def _local_path(self) -> Path:
        return Path(self.repo_id).expanduser()

    @property
    def _root(self) -> Path:
        """Folder that relative file names resolve against (local repos)."""
        p = self._local_path
        return p.parent if p.is_file() else p

    @functools.cached_property
    def files(self) -> list[str]:
        """Every file of the repo, as paths relative to its root."""
        if self.repo_type is RepoType.local:
            p = self._local_path
            if p.is_file():
                return [p.name]
            return sorted(
                str(f.relative_to(p)) for f in p.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
        if huggingface_hub.constants.HF_HUB_OFFLINE:
            snapshot = self._cached_snapshot()
            if snapshot is None:
                raise RepoError(f"{self.repo_id}@{self.revision} is not in the HF cache and HF_HUB_OFFLINE is set")
            return sorted(str(f.relative_to(snapshot)) for f in snapshot.rglob("*") if f.is_file())
        return sorted(s.rfilename for s in (self.info.siblings or []))

    def _cached_snapshot(self) -> Path | None:
        """The HF-cache snapshot folder of this revision (offline use), or None."""
        repo_dir = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{self.repo_id.replace('/', '--')}"
        ref = repo_dir / "refs" / self.revision
        commit = ref.read_text().strip() if ref.is_file() else self.revision
        snapshot = repo_dir / "snapshots" / commit
        return snapshot if snapshot.is_dir() else None

    @functools.cached_property
    def info(self) -> huggingface_hub.ModelInfo:
        """Hub metadata (online); for a local repo a ModelInfo listing its files."""
        if self.repo_type is RepoType.local:
            return huggingface_hub.ModelInfo(id=self.repo_id, siblings=[{"rfilename": f} for f in self.files])
        try:
            return huggingface_hub.HfApi().model_info(self.repo_id, revision=self.revision)
        except Exception as exc:  # hub errors, offline mode, and the HTTP stack's transport errors
            raise RepoError(f"cannot read model info of {self.repo_id}@{self.revision}: {str(exc).splitlines()[0]}") from None

    def file_exists(self, filename: str) -> bool:
        if self.repo_type is RepoType.local:
            return (self._root / filename).is_file() and filename in self.files
        return filename in self.files

    def size_of(self, filename: str) -> int | None:
        """Bytes of one file (local stat, HF cache, or a HEAD request), None when unknown."""
        if self.repo_type is RepoType.local:
            path = self._root / filename
            return path.stat().st_size if path.is_file() else None
        cached = huggingface_hub.try_to_load_from_cache(self.repo_id, filename, revision=self.revision)
        if isinstance(cached, str):
            return os.path.getsize(cached)
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

        url = huggingface_hub.hf_hub_url(self.repo_id, filename, revision=self.revision)
        try:
            return huggingface_hub.get_hf_file_metadata(url).size
        except (HfHubHTTPError, OfflineModeIsEnabled):
            return None

    def download(self, filename: str, force_download: bool = False) -> Path:
        """Local path of a repo file, downloading it into the HF cache when online."""
        if self.repo_type is RepoType.local:
            path = self._root / filename
            if not path.is_file():
                raise RepoError(f"{filename} not found in local repo {self.repo_id}")
            return path
        try:
            return Path(huggingface_hub.hf_hub_download(
                self.repo_id, filename, revision=self.revision, force_download=force_download,
                tqdm_class=rich_progress_class(),
            ))
        except Exception as exc:  # hub errors, offline misses, and the HTTP stack's transport errors
            raise RepoError(f"cannot download {filename} from {self.repo_id}@{self.revision}: {str(exc).splitlines()[0]}") from None

    # ---- weights and encodings --------------------------------------------------------------------

    @functools.cached_property
    def weight_files(self) -> dict[WeightsFormat, list[str]]:
        """Weight files by format (safetensors shards, GGUF files, pytorch .bin), only formats present."""
        found: dict[WeightsFormat, list[str]] = {}
        for f in self.files:
            if f.endswith(".gguf"):
                found.setdefault(WeightsFormat.gguf, []).append(f)
            elif f.endswith(".safetensors"):
                found.setdefault(WeightsFormat.safetensors, []).append(f)
            elif f.endswith(".bin") and Path(f).name.startswith("pytorch_model"):
                found.setdefault(WeightsFormat.pytorch, []).append(f)
        return found

    @property
    def formats_available(self) -> list[WeightsFormat]:
        return list(self.weight_files)

    def encoding_for_file(self, file: str | Path) -> SupportedEncoding:
        """Encoding of one weight file: GGUF metadata/tensor types, or safetensors dtypes (config
        torch_dtype for online repos). Online GGUF files are judged by name, to avoid a download."""
        name = str(file)
        if name.endswith(".gguf"):
            if self.repo_type is RepoType.local:
                return _gguf_file_encoding(self._root / name)
            enc = SupportedEncoding.parse_from_file_name(Path(name).name)
            if enc is None:
                raise RepoError(f"cannot tell the encoding of {name} from its name in {self.repo_id}")
            return enc
        if name.endswith(".safetensors"):
            return self._safetensors_encoding(name)
        raise RepoError(f"{name}: not a weight file (expected .gguf or .safetensors)")

    def _safetensors_encoding(self, name: str) -> SupportedEncoding:
        if self.repo_type is RepoType.local:
            from maxcli.weights.safetensors_io import open_safetensors

            with open_safetensors(self._root / name) as handle:  # WeightsError (one line, names the file) when corrupt
                counts = Counter(handle.get_slice(k).get_dtype() for k in handle.keys())
            for dtype, _ in counts.most_common():
                if dtype in _DTYPE_ENCODINGS:
                    return _DTYPE_ENCODINGS[dtype]
        elif self.info.safetensors is not None and self.info.safetensors.parameters:
            dtype = max(self.info.safetensors.parameters.items(), key=lambda kv: kv[1])[0]
            if dtype in _DTYPE_ENCODINGS:
                return _DTYPE_ENCODINGS[dtype]
        if self.file_exists("config.json"):
            config = json.loads(self.download("config.json").read_text())
            dtype = config.get("torch_dtype") or config.get("dtype")
            if dtype in _DTYPE_ENCODINGS:
                return _DTYPE_ENCODINGS[dtype]
        raise RepoError(f"cannot tell the dtype of {name} in {self.repo_id}")

    @functools.cached_property
    def supported_encodings(self) -> list[SupportedEncoding]:
        """Encodings the repo's weight files carry (each GGUF file counts on its own)."""
        found: list[SupportedEncoding] = []
        for fmt in (WeightsFormat.safetensors, WeightsFormat.gguf):
            files = self.weight_files.get(fmt, [])
            targets = files[:1] if fmt is WeightsFormat.safetensors else files  # shards share a dtype
            for f in targets:
                enc = self.encoding_for_file(f)
                if enc not in found:
                    found.append(enc)
        return found

    def files_for_encoding(
        self,
        encoding: SupportedEncoding,
        weights_format: WeightsFormat | None = None,
        alternate_encoding: SupportedEncoding | None = None,
    ) -> dict[WeightsFormat, list[Path]]:
        """Weight files holding `encoding` (else `alternate_encoding`), by format; {} when none."""
        for enc in (encoding, alternate_encoding):
            if enc is None:
                continue
            out: dict[WeightsFormat, list[Path]] = {}
            for fmt, files in self.weight_files.items():
                if weights_format is not None and fmt is not weights_format:
                    continue
                if fmt is WeightsFormat.safetensors and files and self.encoding_for_file(files[0]) is enc:
                    out[fmt] = [Path(f) for f in files]
                elif fmt is WeightsFormat.gguf:
                    match = [Path(f) for f in files if self.encoding_for_file(f) is enc]
                    if match:
                        out[fmt] = match
            if out:
                return out
        return {}

    def __str__(self) -> str:
        return self.repo_id if self.revision == "main" else f"{self.repo_id}@{self.revision}"


def rich_progress_class() -> type:
    """tqdm's rich front end, for huggingface_hub's download bars (one bar per file, on stderr)."""
    import warnings

    from tqdm import TqdmExperimentalWarning
    from tqdm.rich import tqdm_rich

    warnings.filterwarnings("ignore", category=TqdmExperimentalWarning)
    return tqdm_rich


def resolve_encoding_and_weights(
    repo: HuggingFaceRepo,
    requested: SupportedEncoding | None,
    weight_paths: list[Path],
    default_encoding: SupportedEncoding,
    supported_encodings: list[SupportedEncoding] | dict[SupportedEncoding, Any],
    allow_cast: bool = False,
) -> tuple[SupportedEncoding, list[Path]]:
    """Pick the encoding and weight files (the seeds' validate_and_resolve_quantization_encoding_weight_path).

    - explicit weight_paths: their encoding; a different requested encoding only as an fp32<->bf16 cast.
    - no request: the architecture default when the repo carries it, else the first encoding the repo
      carries that the architecture supports.
    - a request the repo lacks: an fp32<->bf16 cast when allowed, else an error naming what it carries.
    """
    arch_supported = list(supported_encodings)
    if weight_paths:
        carried = repo.encoding_for_file(weight_paths[0])
        encoding = requested or carried
        if encoding is not carried and not (allow_cast and {encoding, carried} <= _CASTABLE):
            raise RepoError(f"weight file {weight_paths[0]} holds {carried}, not the requested {encoding}")
        _check_arch(encoding, arch_supported)
        return encoding, [Path(p) for p in weight_paths]
    carried_all = repo.supported_encodings
    if not carried_all:
        raise RepoError(f"{repo} holds no weight files (.safetensors or .gguf)")
    if requested is None:
        options = [default_encoding] + [e for e in carried_all if e in arch_supported]
        encoding = next((e for e in options if e in carried_all), None)
        if encoding is None:
            raise RepoError(f"{repo} carries {_names(carried_all)}; the architecture supports {_names(arch_supported)}")
    else:
        encoding = requested
    _check_arch(encoding, arch_supported)
    alternate = None
    if allow_cast and encoding in _CASTABLE:
        alternate = next(iter(_CASTABLE - {encoding}))
    files = repo.files_for_encoding(encoding, alternate_encoding=alternate)
    if not files:
        hint = "" if allow_cast or encoding not in _CASTABLE else " (allow a float32<->bfloat16 cast to use those)"
        raise RepoError(f"{repo} has no {encoding} weights; it carries {_names(carried_all)}{hint}")
    fmt = WeightsFormat.safetensors if WeightsFormat.safetensors in files else next(iter(files))
    paths = files[fmt]
    if fmt is WeightsFormat.gguf:
        paths = paths[:1]  # several GGUF files of one encoding are alternatives, not shards
    return encoding, paths


def _names(encodings: list[SupportedEncoding]) -> str:
    return ", ".join(str(e) for e in encodings) or "nothing"


def _check_arch(encoding: SupportedEncoding, arch_supported: list[SupportedEncoding]) -> None:
    if encoding not in arch_supported:
        raise RepoError(f"encoding {encoding} is not supported by this architecture (supported: {_names(arch_supported)})")


def config_json_values(repo: HuggingFaceRepo) -> dict[str, Any] | None:
    """config.json of the repo, None when it has none."""
    if not repo.file_exists("config.json"):
        return None
    try:
        return json.loads(repo.download("config.json").read_text())
    except json.JSONDecodeError as exc:
        raise RepoError(f"config.json of {repo} is not valid JSON: {exc}") from None


def gguf_config_values(repo: HuggingFaceRepo) -> dict[str, Any]:
    """The HF-style config of the repo's (first) GGUF file."""
    ggufs = repo.weight_files.get(WeightsFormat.gguf, [])
    if ggufs:
        return GGUFFile.open(repo.download(ggufs[0])).hf_config()
    raise RepoError(f"{repo} has neither config.json nor a GGUF file")


def load_hf_config(repo: HuggingFaceRepo) -> dict[str, Any]:
    """config.json of the repo, or the HF-style config of its GGUF file when it has no config.json."""
    values = config_json_values(repo)
    return values if values is not None else gguf_config_values(repo)


def huggingface_repo_for(pipeline_config: Any) -> HuggingFaceRepo:
    """The model repo a PipelineConfig names (path, revision, trust_remote_code)."""
    return HuggingFaceRepo(
        repo_id=pipeline_config.model_path,
        revision=pipeline_config.huggingface_model_revision,
        trust_remote_code=pipeline_config.trust_remote_code,
    )
