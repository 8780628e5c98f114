"""Text tokenizer for pipelines (transformers' AutoTokenizer, or `tokenizers` directly for a cached GGUF
vocabulary) and streaming detokenization."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from maxcli.interfaces import InputError, PipelineTokenizer, TextGenerationRequest
from maxcli.pipelines.core.context import TextContext

# Prompt room assumed when neither max_length nor the tokenizer gives a context limit.
_FALLBACK_MAX_LENGTH = 32768
_REPLACEMENT_CHAR = "\ufffd"


class TokenizerLoadError(ValueError):
    """A tokenizer that cannot be loaded from the given path / repo."""


class TextTokenizer(PipelineTokenizer[TextContext, list[int], TextGenerationRequest]):
    """PipelineTokenizer over `transformers.AutoTokenizer` (a GGUF file's own vocabulary and chat
    template when `gguf_file` is given, or when `model_path` is a .gguf file)."""

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        max_length: int | None = None,
        trust_remote_code: bool = False,
        gguf_file: str | None = None,
        context_validators: list[Any] | None = None,
        context_type: type | None = None,
        **kwargs: Any,
    ) -> None:
        """`context_validators` run on every new context (an architecture's SupportedArchitecture field);
        `context_type` is the context class new_context builds (TextContext unless the arch says otherwise)."""
        self.context_validators = list(context_validators or [])
        self.context_type = context_type or TextContext
        path = Path(model_path)
        if gguf_file is None and path.suffix == ".gguf" and path.is_file():
            model_path, gguf_file = str(path.parent), path.name
        self.model_path = str(model_path)
        self.gguf_file = gguf_file
        try:
            if gguf_file is not None and not kwargs:
                self.delegate = _load_gguf_tokenizer_cached(Path(self.model_path) / gguf_file)
            else:
                from transformers import AutoTokenizer

                self.delegate = AutoTokenizer.from_pretrained(
                    self.model_path, revision=revision, trust_remote_code=trust_remote_code, gguf_file=gguf_file, **kwargs
                )
        except Exception as exc:  # OSError / ValueError / hub errors, each with multi-line messages
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TokenizerLoadError(f"cannot load a tokenizer from {self.model_path}: {first}") from None
        model_max = getattr(self.delegate, "model_max_length", None)
        if max_length is None and isinstance(model_max, int) and model_max < 10**8:
            max_length = model_max
        self.max_length = max_length
        self._eos_ids = self._collect_eos_ids(revision, trust_remote_code)

    def _collect_eos_ids(self, revision: str | None, trust_remote_code: bool) -> frozenset[int]:
        ids: set[int] = set()
        if self.delegate.eos_token_id is not None:
            ids.add(int(self.delegate.eos_token_id))
        if self.gguf_file is None:
            from transformers import GenerationConfig

            try:
                gen = GenerationConfig.from_pretrained(self.model_path, revision=revision, trust_remote_code=trust_remote_code)
            except (OSError, ValueError):  # no generation_config.json: nothing to add
                gen = None
            eos = getattr(gen, "eos_token_id", None)
            if eos is not None:
                ids.update(int(e) for e in (eos if isinstance(eos, list) else [eos]))
        return frozenset(ids)

    # ---- PipelineTokenizer ----------------------------------------------------------------------

    @property
    def eos(self) -> int:
        if self.delegate.eos_token_id is not None:
            return int(self.delegate.eos_token_id)
        if self._eos_ids:
            return min(self._eos_ids)
        raise ValueError(f"tokenizer of {self.model_path} has no end-of-sequence token")

    @property
    def eos_token_ids(self) -> set[int]:
        """The tokenizer's eos plus generation_config.json's eos ids."""
        return set(self._eos_ids)

    @property
    def vocab_size(self) -> int:
        return len(self.delegate)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.delegate, "chat_template", None))

    async def encode(self, prompt: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.delegate.encode(prompt, add_special_tokens=add_special_tokens))

    def token_strings(self, token_ids: list[int]) -> list[str]:
        """Each id's vocabulary entry (byte-level pieces as the vocabulary stores them)."""
        return [str(t) for t in self.delegate.convert_ids_to_tokens(list(token_ids))]

    async def decode(self, tokens: Any, skip_special_tokens: bool = False, **kwargs: Any) -> str:
        """Text of one token id or a sequence of them (numpy arrays and tensors included)."""
        ids = [int(tokens)] if isinstance(tokens, int) or getattr(tokens, "ndim", 1) == 0 else [int(t) for t in tokens]
        return self.delegate.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def apply_chat_template(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The chat template's text for `messages` (ending with the assistant prompt by default), with the
        function `tools` for templates that render them."""
        if not self.has_chat_template:
            raise InputError(f"the tokenizer of {self.model_path} has no chat template; send a prompt instead")
        try:
            return self.delegate.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools
            )
        except Exception as exc:  # jinja errors on malformed messages
            raise InputError(f"cannot apply the chat template to these messages: {exc}") from None

    async def new_context(self, request: TextGenerationRequest) -> TextContext:
        """Tokens for the request (messages through the chat template; a text prompt encoded as is;
        token ids used as given), validated against max_length and the sampling rules."""
        request.sampling_params.validate()
        if request.messages is not None:
            if not request.messages:
                raise InputError("messages must not be empty")
            if request.apply_chat_template:
                text = self.apply_chat_template(request.messages, tools=request.tools)
                tokens = await self.encode(text, add_special_tokens=False)  # the template adds them
            else:
                text = "\n".join(str(m.get("content", "")) for m in request.messages)
                tokens = await self.encode(text)
        elif isinstance(request.prompt, str):
            tokens = await self.encode(request.prompt)
        elif isinstance(request.prompt, list):
            tokens = self._check_token_ids(request.prompt)
        else:
            raise InputError("a request needs a prompt or messages")
        if not tokens:
            raise InputError("the prompt is empty")
        bias = request.sampling_params.logit_bias or {}
        if any(t >= self.vocab_size for t in bias):
            raise InputError(f"logit_bias names token {max(bias)}, outside the vocabulary [0, {self.vocab_size})")
        limit = self.max_length
        if limit is not None and len(tokens) > limit:
            raise InputError(f"prompt of {len(tokens)} tokens is longer than max_length {limit}")
        context = self.context_type(
            request_id=request.request_id,
            tokens=tokens,
            max_length=limit if limit is not None else len(tokens) + _FALLBACK_MAX_LENGTH,
            sampling_params=request.sampling_params,
            eos_token_ids=frozenset(self._eos_ids),
            lora_name=getattr(request, "lora", None),
        )
        run_context_validators(self.context_validators, context)
        return context

    def _check_token_ids(self, ids: list[Any]) -> list[int]:
        vocab = self.vocab_size
        for t in ids:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab:
                raise InputError(f"prompt token {t!r} is not a token id in [0, {vocab})")
        return list(ids)


def run_context_validators(validators: list[Any], context: Any) -> None:
    """Each validator sees the new context; a failure is an InputError with the validator's message (the
    seeds ask validators to raise InputError; any other exception is reported the same way)."""
    for validate in validators:
        try:
            validate(context)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user validator's own exception type
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{getattr(validate, '__name__', 'context validator')}: {first}") from None


class IncrementalDetokenizer:
    """Streams text for token ids fed one at a time.

    Invariant: the concatenation of every `push()` result and the final `flush()` equals
    `decode(all ids)`. A delta ending in U+FFFD (an incomplete multi-byte character) is held back until
    later tokens complete it. Each push decodes only a short window (from the last emitted boundary),
    so the cost per token is O(window), not O(sequence).
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = False) -> None:
        self._tok = getattr(tokenizer, "delegate", tokenizer)
        self._skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix_offset = 0  # window start: decoding starts here so spacing/merges stay consistent
        self._read_offset = 0  # tokens before this are already emitted
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=self._skip)

    def push(self, token: int) -> str:
        """Add one token id; return the newly completed text (possibly empty)."""
        self.ids.append(int(token))
        prefix = self._decode(self.ids[self._prefix_offset : self._read_offset])
        full = self._decode(self.ids[self._prefix_offset :])
        if len(full) <= len(prefix) or full.endswith(_REPLACEMENT_CHAR) or not full.startswith(prefix):
            return ""
        delta = full[len(prefix) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """Text still held back at the end of the stream (e.g. a genuinely invalid byte sequence)."""
        full = self._decode(self.ids)
        rest = full[len(self.text) :] if full.startswith(self.text) else ""
        self.text += rest
        return rest


def tokenizer_cache_dir() -> Path:
    return Path(os.environ.get("MAXCLI_CACHE", Path.home() / ".cache" / "maxcli")) / "tokenizers"


def _load_gguf_tokenizer_cached(gguf_path: Path) -> Any:
    """The tokenizer of a GGUF file, converted by transformers once and kept as tokenizer.json in
    maxcli's cache; a cache hit is served by `tokenizers` directly (TokenizerFile) when it can stand
    for transformers' tokenizer, so no transformers code is imported.

    Converting the GGUF vocabulary takes seconds; loading the saved tokenizer.json ~0.1 s. The key
    covers the file (path, size, mtime) and the transformers version that converted it."""
    import hashlib
    from importlib.metadata import version

    st = gguf_path.stat()
    key_text = f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{version('transformers')}"
    cached = tokenizer_cache_dir() / hashlib.sha1(key_text.encode()).hexdigest()[:16]
    if (cached / "tokenizer_config.json").is_file():
        try:
            fast = TokenizerFile.load(cached)
            return fast if fast is not None else _auto_tokenizer(str(cached))
        except Exception:  # a damaged cache entry: rebuild it below
            pass
    tok = _auto_tokenizer(str(gguf_path.parent), gguf_file=gguf_path.name)
    try:
        import shutil
        import tempfile

        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent))
        tok.save_pretrained(str(tmp))
        shutil.rmtree(cached, ignore_errors=True)
        tmp.rename(cached)
    except OSError:  # a read-only home: the cache is an optimisation, never a requirement
        pass
    return tok


def _auto_tokenizer(where: str, **kwargs: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(where, **kwargs)


_PLAIN_TOKENIZER_CLASSES = ("TokenizersBackend", "Qwen2Tokenizer")
_SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class TokenizerFile:
    """A saved transformers tokenizer (tokenizer.json + tokenizer_config.json [+ chat_template.jinja])
    served by the `tokenizers` library: the part of transformers' tokenizer API that TextTokenizer and
    the detokenizer use, with the same results. Only classes that add nothing to tokenizer.json at run
    time qualify (transformers' generic `TokenizersBackend`, and `Qwen2Tokenizer`, which only builds
    that file's BPE when it has none), with decode clean-up off; `load` returns None otherwise.
    Chat templates render through transformers' own renderer (imported on first use) unless the
    template and messages qualify for `_plain_template`."""

    def __init__(self, backend: Any, config: dict[str, Any], chat_template: str | None) -> None:
        self._tokenizer = backend
        self.special_tokens_map = {
            name: _token_text(config[name]) for name in _SPECIAL_TOKEN_NAMES if config.get(name) is not None
        }
        eos = self.special_tokens_map.get("eos_token")
        self.eos_token_id = backend.token_to_id(eos) if eos is not None else None
        self.model_max_length = config.get("model_max_length")
        self.chat_template = chat_template

    @classmethod
    def load(cls, folder: Path) -> "TokenizerFile | None":
        import json

        from tokenizers import Tokenizer

        config = json.loads((folder / "tokenizer_config.json").read_text())
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        eligible = (
            config.get("tokenizer_class") in _PLAIN_TOKENIZER_CLASSES
            and not config.get("clean_up_tokenization_spaces", False)
            and (template is None or isinstance(template, str))
            and not (folder / "chat_template.json").exists()
        )
        if not eligible:
            return None
        tok = cls(Tokenizer.from_file(str(folder / "tokenizer.json")), config, template)
        if "eos_token" in tok.special_tokens_map and tok.eos_token_id is None:
            return None  # transformers would map an unknown eos to the unk id: leave that to it
        return tok

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, token_ids: Any, skip_special_tokens: bool = False) -> str:
        ids = [token_ids] if isinstance(token_ids, int) else list(token_ids)
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, token_ids: list[int]) -> list[str]:
        """Each id's vocabulary entry (byte-level pieces as stored, e.g. 'Ġthe')."""
        return [self._tokenizer.id_to_token(int(t)) for t in token_ids]

    def apply_chat_template(
        self, messages: list[dict[str, Any]], tokenize: bool = False, add_generation_prompt: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """transformers' apply_chat_template(..., tokenize=False) for one conversation."""
        if tokenize:
            raise ValueError("TokenizerFile.apply_chat_template renders text only (tokenize=False)")
        if not self.chat_template:
            raise ValueError("this tokenizer has no chat template")
        if not messages:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        conversation = [{k: v for k, v in m.items() if v is not None} for m in messages]
        plain = self._plain_template
        if plain is not None and all(_plain_message(m) for m in conversation):
            return plain.render(
                messages=conversation, tools=tools, documents=None, add_generation_prompt=add_generation_prompt,
                **self.special_tokens_map,
            )
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[conversation],
            tools=tools,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens_map,
        )
        return rendered[0]


    @functools.cached_property
    def _plain_template(self) -> Any:
        """The chat template compiled by jinja2 in transformers' environment settings (immutable sandbox,
        trim_blocks, lstrip_blocks, loop controls, `raise_exception`, its `tojson` filter), or None when
        the template reads anything that environment defines differently (its `dict`, `namespace`,
        `strftime_now`, the `generation` tag). Importing transformers for its renderer costs ~0.3 s of
        a cold start; templates that pass this check render identically without it."""
        import jinja2
        import jinja2.meta
        import jinja2.nodes
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        default_globals, env.globals = env.globals, {}  # so that the names read include globals
        try:
            ast = env.parse(self.chat_template)
        except jinja2.TemplateSyntaxError:
            return None
        names = jinja2.meta.find_undeclared_variables(ast)
        env.globals = {**default_globals, "raise_exception": _raise_template_error}
        env.filters["tojson"] = _tojson
        if not names <= _PLAIN_TEMPLATE_NAMES:
            return None
        return env.from_string(self.chat_template)


# What a template may read for TokenizerFile's own renderer: the variables transformers passes and the
# globals both environments define the same way.
_PLAIN_TEMPLATE_NAMES = frozenset(
    {"messages", "add_generation_prompt", "tools", "documents", "raise_exception", "range", "lipsum", "cycler", "joiner"}
    | set(_SPECIAL_TOKEN_NAMES)
)
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # transformers aliases these among themselves


def _plain_message(message: Any) -> bool:
    """A message transformers would pass to the template unchanged: plain strings, no reasoning fields."""
    return isinstance(message, dict) and all(
        type(k) is str and type(v) is str and k not in _REASONING_KEYS for k, v in message.items()
    )


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False) -> str:
    """transformers' chat-template `tojson` (plain json.dumps, no HTML escaping, its options)."""
    import json

    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_template_error(message: str) -> None:
    import jinja2

    raise jinja2.exceptions.TemplateError(message)


def _token_text(token: Any) -> str:
    """A special token as tokenizer_config.json stores it: a string, or an AddedToken dict."""
    return str(token["content"]) if isinstance(token, dict) else str(token)
