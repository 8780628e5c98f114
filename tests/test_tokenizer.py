"""TextTokenizer and IncrementalDetokenizer on both real models, against transformers' own tokenizer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from maxcli.interfaces import InputError, RequestID, SamplingParams, TextGenerationRequest
from maxcli.pipelines.lib.tokenizer import IncrementalDetokenizer, TextTokenizer, TokenizerLoadError

TEXTS = ["Hello, world!", "Ünïcödé ☕ and emoji 🎉🚀 plus 中文字符 and 日本語", "  spaces\tand\nnewlines  "]
MESSAGES = [{"role": "user", "content": "What is 2+2? 🤔"}]


@pytest.fixture(scope="module")
def smol(smollm2_gguf: Path) -> tuple[TextTokenizer, object]:
    ours = TextTokenizer(smollm2_gguf.parent, gguf_file=smollm2_gguf.name, max_length=64)
    return ours, AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def qwen(qwen_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TextTokenizer, object]:
    """Qwen2.5-Coder's tokenizer served from maxcli's cache by `tokenizers` directly (TokenizerFile: the
    second load), against transformers' Qwen2Tokenizer reading the same GGUF."""
    import os

    from maxcli.pipelines.lib.tokenizer import TokenizerFile

    os.environ["MAXCLI_CACHE"] = str(tmp_path_factory.mktemp("maxcli-cache"))
    try:
        TextTokenizer(qwen_gguf.parent, gguf_file=qwen_gguf.name)  # converts once and caches
        ours = TextTokenizer(qwen_gguf.parent, gguf_file=qwen_gguf.name, max_length=64)
    finally:
        del os.environ["MAXCLI_CACHE"]
    assert isinstance(ours.delegate, TokenizerFile)
    return ours, AutoTokenizer.from_pretrained(qwen_gguf.parent, gguf_file=qwen_gguf.name)


@pytest.fixture(scope="module")
def minilm(minilm_dir: Path) -> tuple[TextTokenizer, object]:
    return TextTokenizer(minilm_dir), AutoTokenizer.from_pretrained(minilm_dir)


@pytest.mark.parametrize("which", ["smol", "qwen", "minilm"])
def test_round_trips_equal_transformers(which: str, request) -> None:
    ours, ref = request.getfixturevalue(which)
    for text in TEXTS:
        ids = asyncio.run(ours.encode(text))
        assert ids == ref.encode(text)
        assert asyncio.run(ours.decode(ids)) == ref.decode(ids)
        assert asyncio.run(ours.decode(ids, skip_special_tokens=True)) == ref.decode(ids, skip_special_tokens=True)


def test_qwen_chat_template_renders_like_transformers(qwen) -> None:
    ours, ref = qwen
    conversations = [MESSAGES, [{"role": "system", "content": "Be brief."}, *MESSAGES,
                                {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}]]
    for conversation in conversations:
        want = ref.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        assert ours.apply_chat_template(conversation) == want
    assert ours.delegate._plain_template is not None  # rendered without importing transformers


def test_smollm2_chat_template_and_eos(smol) -> None:
    ours, ref = smol
    text = ours.apply_chat_template(MESSAGES)
    assert text == ref.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    assert ours.eos == 2 and 2 in ours.eos_token_ids and ours.has_chat_template
    ctx = asyncio.run(ours.new_context(TextGenerationRequest(RequestID(), messages=MESSAGES)))
    assert ctx.tokens == ref.encode(text, add_special_tokens=False) and ctx.max_length == 64
    assert ctx.eos_token_ids == frozenset({2})


def test_new_context_prompts_and_errors(smol) -> None:
    ours, ref = smol
    ctx = asyncio.run(ours.new_context(TextGenerationRequest(RequestID(), prompt="Hi there")))
    assert ctx.tokens == ref.encode("Hi there") and ctx.prompt_len == len(ctx.tokens)
    ctx = asyncio.run(ours.new_context(TextGenerationRequest(RequestID(), prompt=[1, 2, 3])))
    assert ctx.tokens == [1, 2, 3]
    bad = [
        TextGenerationRequest(RequestID(), prompt=""),
        TextGenerationRequest(RequestID(), prompt="word " * 100),
        TextGenerationRequest(RequestID(), prompt=[5, 10**9]),
        TextGenerationRequest(RequestID(), prompt="x", sampling_params=SamplingParams(top_p=0.0)),
        TextGenerationRequest(RequestID()),
    ]
    for req in bad:
        with pytest.raises(InputError) as info:
            asyncio.run(ours.new_context(req))
        assert "\n" not in str(info.value)


def test_minilm_has_no_chat_template(minilm) -> None:
    ours, _ = minilm
    assert not ours.has_chat_template and ours.max_length == 512
    with pytest.raises(InputError, match="no chat template"):
        ours.apply_chat_template(MESSAGES)


@pytest.mark.parametrize("which", ["smol", "minilm"])
def test_incremental_detokenization_equals_full_decode(which: str, request) -> None:
    ours, ref = request.getfixturevalue(which)
    ids = ref.encode("Sure! 🎉 Here: 你好世界, naïve café — ok?? 🚀🚀 done.", add_special_tokens=False)
    if which == "smol":
        ids = ids + [2] + ref.encode(" 🤖", add_special_tokens=False)  # a special token mid-stream
    for skip in (False, True):
        detok = IncrementalDetokenizer(ours, skip_special_tokens=skip)
        deltas = [detok.push(t) for t in ids]
        assert all("\ufffd" not in d for d in deltas)
        assert "".join(deltas) + detok.flush() == ref.decode(ids, skip_special_tokens=skip)
    if which == "smol":  # byte-level BPE splits the emoji over several tokens: some pushes hold back
        assert any(d == "" for d in deltas)


def test_unloadable_tokenizer_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(TokenizerLoadError) as info:
        TextTokenizer(tmp_path)
    assert "\n" not in str(info.value)
