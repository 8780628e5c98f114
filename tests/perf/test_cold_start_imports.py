"""Cold start, checked structurally (never by timing): what a command imports, and that every shortcut on
the GGUF generate path gives exactly what the library it stands in for gives.

- `import maxcli.cli.main` and `maxcli --help` import neither torch nor transformers.
- A GGUF `maxcli generate` (caches warm) imports no transformers code at all.
- The snapshotted GGUF config equals transformers' config attribute by attribute.
- TokenizerFile (`tokenizers` directly) equals transformers' tokenizer; its own chat-template renderer
  equals transformers' renderer, and hands templates it cannot vouch for to transformers.
- A GGUF header read back from maxcli's header cache equals a fresh gguf.GGUFReader read, and an entry
  for an older version of the file is not used; the CPU KV cache is zeros that cost no RSS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "weights"))
from gguf_factory import write_tiny_gguf  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level package names in sys.modules after running code in a fresh interpreter."""
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, **(env or {})})
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_import_and_help_load_neither_torch_nor_transformers() -> None:
    assert not {"torch", "transformers"} & _modules_after("import maxcli.cli.main")
    help_run = "import contextlib, io\nfrom maxcli.cli.main import main\n" \
               "with contextlib.redirect_stdout(io.StringIO()):\n    assert main(['generate', '--help']) == 0"
    assert not {"torch", "transformers"} & _modules_after(help_run)


def test_gguf_generate_imports_no_transformers(smollm2_gguf: Path) -> None:
    run = (
        "import contextlib, io, json\nfrom maxcli.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    rc = main(['generate', '--model', {str(smollm2_gguf)!r}, '--prompt', 'Hi', '--max-new-tokens', '2', '--json'])\n"
        "assert rc == 0 and json.loads(out.getvalue())['token_ids'], out.getvalue()\n"
    )
    _modules_after(run)  # fills the tokenizer and config caches (the first use of a model converts them)
    loaded = _modules_after(run)
    assert "torch" in loaded and "tokenizers" in loaded
    assert "transformers" not in loaded


# ---- the GGUF config snapshot ---------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma3", "phi3"])
def test_config_snapshot_equals_transformers_config(arch: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maxcli.architectures.llama3.weight_adapters import config_dict
    from maxcli.pipelines.lib.hf_config import ConfigSnapshot, build_transformers_config, snapshot_of, snapshotted_config
    from maxcli.weights import GGUFFile

    monkeypatch.setenv("MAXCLI_CACHE", str(tmp_path / "cache"))
    values = GGUFFile(write_tiny_gguf(tmp_path / f"{arch}.gguf", arch)).hf_config()
    real = snapshotted_config(values)  # a miss: transformers' own config, snapshotted
    snap = snapshotted_config(values)  # a hit
    assert not isinstance(real, ConfigSnapshot) and isinstance(snap, ConfigSnapshot)
    assert snap.to_dict() == real.to_dict() == dict(snap) == config_dict(snap) == config_dict(real)
    compared = 0
    for name in snapshot_of(build_transformers_config(values))["attributes"]:
        assert getattr(snap, name) == getattr(real, name), name
        compared += 1
    assert compared > 30 and snap.get_text_config() is snap
    for name in ("hidden_act", "rope_parameters", "head_dim", "layer_types", "sliding_window", "tie_word_embeddings"):
        assert getattr(snap, name, "missing") == getattr(real, name, "missing"), name


# ---- the tokenizer ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers_pair(smollm2_gguf: Path):
    """(TokenizerFile from maxcli's cache, transformers' tokenizer converted from the GGUF file)."""
    from transformers import AutoTokenizer

    from maxcli.pipelines.lib.tokenizer import TokenizerFile, _load_gguf_tokenizer_cached

    _load_gguf_tokenizer_cached(smollm2_gguf)  # makes sure the cache entry exists
    fast = _load_gguf_tokenizer_cached(smollm2_gguf)
    assert isinstance(fast, TokenizerFile)
    return fast, AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


TEXTS = ["What is the capital of France?", "", " ", "  two spaces", "tail  ", "\n\nnew\nlines\n", "tab\tand\r\nCRLF",
         "<|im_start|>user\nhi<|im_end|>", "<|endoftext|>x<|im_end|>", "émojis 🤗🚀 ünïcödé 日本語", "a" * 300,
         "def f(x):\n    return x**2  # code", "\u200b zero width \ufeff bom"]


def test_tokenizer_file_equals_transformers(tokenizers_pair) -> None:
    fast, ref = tokenizers_pair
    for text in TEXTS:
        for special in (True, False):
            assert fast.encode(text, add_special_tokens=special) == ref.encode(text, add_special_tokens=special), text
    assert len(fast) == len(ref) and fast.eos_token_id == ref.eos_token_id
    assert fast.chat_template == ref.chat_template and fast.special_tokens_map == ref.special_tokens_map
    ids = list(range(0, len(ref), 7)) + [0, 1, 2, len(ref) - 1]
    for skip in (False, True):
        assert [fast.decode([i], skip_special_tokens=skip) for i in ids] == [ref.decode([i], skip_special_tokens=skip) for i in ids]
        assert fast.decode(ids[:300], skip_special_tokens=skip) == ref.decode(ids[:300], skip_special_tokens=skip)


CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi {{ x }} {% raw %}"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "ü 🤗"}],
]

TEMPLATES = {  # trim/lstrip whitespace control, loop controls, raise_exception, special tokens, tools=None
    "plain": "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}{% continue %}{% endif %}\n"
             "  {{ m['role'] }}: {{ m['content'] | trim }}{{ eos_token }}\n{% endfor %}"
             "{% if tools is not none %}{{ raise_exception('no tools') }}{% endif %}"
             "{% if add_generation_prompt %}assistant:{% endif %}",
    "tojson": "{% for m in messages %}{{ m | tojson }}{% endfor %}",
    "namespace": "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
}


@pytest.mark.parametrize("template", ["smollm2", *TEMPLATES])
def test_chat_template_rendering_equals_transformers(tokenizers_pair, template: str) -> None:
    import copy

    fast, ref = tokenizers_pair
    fast = copy.copy(fast)
    fast.__dict__.pop("_plain_template", None)
    if template != "smollm2":
        fast.chat_template = TEMPLATES[template]
    assert (fast._plain_template is not None) == (template in ("smollm2", "plain", "tojson"))
    for conversation in CONVERSATIONS:
        for prompt in (True, False):
            want = ref.apply_chat_template(conversation, chat_template=fast.chat_template, tokenize=False,
                                           add_generation_prompt=prompt)
            assert fast.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt) == want


# ---- GGUF header and KV cache ----------------------------------------------------------------------


def _no_reader(path: Path) -> None:
    raise AssertionError(f"GGUFReader opened {path}")


def test_gguf_header_cache_round_trip_equals_gguf_reader(smollm2_gguf: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    from maxcli.weights import GGUFFile, gguf_cache

    monkeypatch.setenv("MAXCLI_CACHE", str(tmp_path / "cache"))
    GGUFFile(smollm2_gguf)  # a miss: read with GGUFReader, entry written
    assert len(list((tmp_path / "cache" / "gguf-headers").glob("*.json"))) == 1
    with monkeypatch.context() as m:  # a hit: opening, small fields, tensors and config need no reader
        m.setattr(gguf_cache, "read_with_gguf", _no_reader)
        ours = GGUFFile(smollm2_gguf)
        assert ours.get("llama.block_count") == 30 and ours.array_length("tokenizer.ggml.tokens") == 49152
        ours.hf_config()
        ours.tensors
    ref = GGUFReader(smollm2_gguf)
    want = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    want = {k: v.item() if isinstance(v, np.generic) else v for k, v in want.items()}
    assert list(ours.metadata) == list(want)  # the vocabulary arrays come from a reader opened now
    for key, value in want.items():
        assert ours.metadata[key] == value and type(ours.metadata[key]) is type(value), key
        assert ours.value_type(key) == ref.fields[key].types[0]
        if ref.fields[key].types[0] == GGUFValueType.ARRAY:
            assert ours.array_length(key) == len(value), key
        else:
            assert ours.array_length(key) is None, key
    assert list(ours.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        w = ours.tensors[t.name]
        assert (w.shape, w.qtype, w.nbytes) == (tuple(reversed(t.shape.tolist())), t.tensor_type, t.n_bytes)
    for t in ref.tensors[:40]:
        assert np.array_equal(ours.tensors[t.name].raw_blocks().numpy().reshape(-1),
                              np.frombuffer(t.data, np.uint8, count=t.n_bytes))


def test_gguf_header_cache_ignores_stale_and_corrupt_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from maxcli.weights import GGUFFile, gguf_cache

    monkeypatch.setenv("MAXCLI_CACHE", str(tmp_path / "cache"))
    path = write_tiny_gguf(tmp_path / "m.gguf", "llama")
    assert GGUFFile(path).get("llama.block_count") == 2
    (entry,) = (tmp_path / "cache" / "gguf-headers").glob("*.json")
    poisoned = json.loads(entry.read_text())
    poisoned["fields"]["llama.block_count"]["value"] = 99
    entry.write_text(json.dumps(poisoned))
    assert GGUFFile(path).get("llama.block_count") == 99  # the entry is what a matching open reads

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # same bytes, newer mtime: stale
    assert GGUFFile(path).get("llama.block_count") == 2
    assert json.loads(entry.read_text())["fields"]["llama.block_count"]["value"] == 2  # rewritten

    write_tiny_gguf(path, "llama", extra_kv={"llama.attention.sliding_window": 4096})  # new content
    assert GGUFFile(path).hf_config()["sliding_window"] == 4096

    entry.write_bytes(b"{not json")  # damaged: ignored, rewritten
    assert GGUFFile(path).get("llama.attention.sliding_window") == 4096
    with monkeypatch.context() as m:
        m.setattr(gguf_cache, "read_with_gguf", _no_reader)
        assert GGUFFile(path).get("llama.attention.sliding_window") == 4096
    assert not list(entry.parent.glob("*.tmp"))


def test_cpu_kv_cache_is_zeros_that_cost_no_rss() -> None:
    import torch

    from maxcli.kv_cache import KVCacheParams, PagedKVCacheManager

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    before = rss()
    kv = PagedKVCacheManager(KVCacheParams(dtype=torch.float32, num_layers=30, n_kv_heads=3, head_dim=64), 1024)
    nbytes = kv.kv_cache.nbytes
    assert nbytes > 700e6 and rss() - before < nbytes // 20
    k, v = kv.layer_caches(29)
    assert k.is_contiguous() and not k[-4:].any() and not v[:4].any()
    k[0] = 1.0  # one page of one layer: RSS grows by about that page, not by huge pages or the cache
    assert rss() - before < nbytes // 20
