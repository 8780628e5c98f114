"""`--engine huggingface`: any transformers AutoModelForCausalLM behind the engine's pipeline surface.

The scheduler, sampler, detokenizer and offline API are the native ones; only the forward differs. Each
request keeps a transformers DynamicCache in `ctx.extra` and runs its own batch-1 forward per step, so a
step costs one model call per scheduled request (no cross-request batching: this is the compatibility
path, not the fast one). The PagedKVCacheManager here holds no K/V: it only counts pages, so the
scheduler's admission, chunked prefill and preemption work unchanged and bound the tokens in flight.
Invariant: a request's cache holds exactly its first `ctx.num_computed_tokens` tokens.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any, Sequence

import torch

from maxcli.config import ConfigError, PipelineConfig
from maxcli.engine import structured
from maxcli.engine.sampler import Sampler, prompt_logprobs
from maxcli.interfaces import LogProbabilities, RequestID
from maxcli.pipelines.core import TextContext
from maxcli.pipelines.lib.pipeline_model import hf_max_positions
from maxcli.pipelines.lib.text_generation import StepResult, TextGenerationPipeline

logger = logging.getLogger("maxcli.pipelines")

_CACHE_KEY = "hf_dynamic_cache"


class HuggingFaceTextGenerationPipeline(TextGenerationPipeline):
    """TextGenerationPipeline whose forward is a transformers model with per-request DynamicCaches.

    `pipeline_model` is the transformers model itself (it has no paged inputs to prepare); `execute`,
    `release` and `kv_managers` are inherited and work through `forward_and_sample`.
    """

    def __init__(
        self,
        pipeline_config: PipelineConfig,
        model: Any,
        kv_manager: Any,
        max_seq_len: int,
        sampler: Sampler | None = None,
    ) -> None:
        super().__init__(pipeline_config, model, kv_manager, max_seq_len, sampler)
        self.model = model
        self.device = next(model.parameters()).device
        # Contexts holding a DynamicCache, weakly: a context the caller dropped takes its cache with it;
        # one still referenced loses its cache at the first step after the KV manager released it.
        self._holders: weakref.WeakValueDictionary[RequestID, TextContext] = weakref.WeakValueDictionary()

    @property
    def num_request_caches(self) -> int:
        """Requests whose DynamicCache is alive (finished ones count until the next step)."""
        return len(self._holders)

    def forward_and_sample(self, scheduled: Sequence[tuple[TextContext, int]]) -> StepResult:
        """Feed each context tokens [num_computed, num_computed + n), sample where a chunk ends its tokens.

        Contexts are not modified except for their cache in ctx.extra (and echo prompt logprobs).
        """
        self._drop_released_caches()
        rows: list[torch.Tensor] = []
        sample_ctxs: list[TextContext] = []
        masks = structured.start_masks([c for c, n in scheduled if c.num_computed_tokens + n == len(c.tokens)])
        for ctx, n in scheduled:
            start = ctx.num_computed_tokens
            if n < 1 or start + n > len(ctx.tokens):
                raise ValueError(f"request {ctx.request_id}: cannot feed {n} tokens from position {start}")
            echo = _wants_prompt_logprobs(ctx)
            logits = self._forward_chunk(ctx, start, n, all_logits=echo)
            if echo:
                _append_prompt_logprobs(ctx, start, n, logits)
            if start + n == len(ctx.tokens):
                rows.append(logits[-1])
                sample_ctxs.append(ctx)
        result = StepResult()
        if not sample_ctxs:
            return result
        out = self.sampler(torch.stack(rows), sample_ctxs, masks)
        token_ids = out.token_ids.tolist()
        if masks is not None:
            structured.advance(sample_ctxs, token_ids)
        for ctx, tok, lp in zip(sample_ctxs, token_ids, out.logprobs):
            result.sampled[ctx.request_id] = tok
            if lp is not None:
                result.logprobs[ctx.request_id] = lp
        return result

    @torch.inference_mode()
    def _initial_step(self, scheduled: Sequence[tuple[TextContext, int]], drafts: Any) -> tuple[StepResult, None, list[TextContext]]:
        """The seeds' execute() runs every step here: transformers' own cache, no ModelInputs to continue."""
        return self.forward_and_sample(scheduled), None, [c for c, _ in scheduled]

    def _forward_chunk(self, ctx: TextContext, start: int, n: int, all_logits: bool) -> torch.Tensor:
        """float32 logits [n or 1, V] of the chunk; extends the request's cache by n tokens."""
        from transformers import DynamicCache

        cache = ctx.extra.get(_CACHE_KEY)
        if start == 0 or cache is None:
            if start != 0:
                raise ValueError(
                    f"request {ctx.request_id}: {start} tokens marked computed but the huggingface engine "
                    "holds no cache for it"
                )
            cache = DynamicCache(config=self.model.config)  # fresh start or preemption by recompute
            ctx.extra[_CACHE_KEY] = cache
            self._holders[ctx.request_id] = ctx
        elif cache.get_seq_length() != start:
            raise ValueError(
                f"request {ctx.request_id}: cache holds {cache.get_seq_length()} tokens, expected {start}"
            )
        ids = torch.tensor([ctx.tokens[start : start + n]], dtype=torch.int64, device=self.device)
        out = self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=0 if all_logits else 1)
        return out.logits[0].float()

    def _drop_released_caches(self) -> None:
        """Free the caches of requests the engine finished or aborted (their pages were released)."""
        for rid in [r for r in self._holders if not self.kv_manager.contains(r)]:
            ctx = self._holders.pop(rid, None)
            if ctx is not None:
                ctx.extra.pop(_CACHE_KEY, None)

    def release(self, request_id: RequestID) -> None:
        super().release(request_id)
        ctx = self._holders.pop(request_id, None)
        if ctx is not None:
            ctx.extra.pop(_CACHE_KEY, None)


def _wants_prompt_logprobs(ctx: TextContext) -> bool:
    sp = ctx.sampling_params
    return sp.echo and sp.logprobs is not None and ctx.num_computed_tokens < ctx.prompt_len


def _append_prompt_logprobs(ctx: TextContext, start: int, n: int, logits: torch.Tensor) -> None:
    """Echo: logprobs of the prompt tokens this chunk scores (row i scores token start + i + 1)."""
    stop = min(start + n, ctx.prompt_len)
    targets = ctx.tokens[start : min(stop + 1, ctx.prompt_len)]
    if len(targets) < 2:
        return
    lp = prompt_logprobs(logits, targets, ctx.sampling_params.logprobs or 0)
    acc = ctx.prompt_log_probabilities
    if acc is None:
        acc = ctx.prompt_log_probabilities = LogProbabilities()
    acc.token_log_probabilities.extend(lp.token_log_probabilities)
    acc.top_log_probabilities.extend(lp.top_log_probabilities)


def _kv_bytes_per_token(hf_config: Any) -> int | None:
    """float32 K+V bytes one token takes in a DynamicCache, or None when the config does not say."""
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or (
        text.hidden_size // heads if heads and getattr(text, "hidden_size", None) else None
    )
    if not (layers and kv_heads and head_dim):
        return None
    return int(layers) * 2 * int(kv_heads) * int(head_dim) * 4


def _max_seq_len(config: PipelineConfig, hf_config: Any) -> int:
    limit = hf_max_positions(hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config)
    if config.max_length is None:
        return limit
    if config.max_length > limit:
        raise ConfigError(f"max_length {config.max_length} exceeds the model's limit of {limit} tokens")
    return config.max_length


def _page_counter(config: PipelineConfig, hf_config: Any, max_seq_len: int, weights_bytes: int) -> Any:
    """A PagedKVCacheManager with 1-element pages: page accounting only (prefix caching off).

    Pages are sized from what the DynamicCaches really take, so the page budget bounds their memory."""
    from maxcli.kv_cache import KVCacheParams, PagedKVCacheManager
    from maxcli.pipelines.lib.pipeline_model import kv_cache_pages

    page_size = config.kv_cache.kv_cache_page_size
    per_token = _kv_bytes_per_token(hf_config)
    real_bytes_per_page = per_token * page_size if per_token else 1  # unknown: the full-batch cap decides
    pages = kv_cache_pages(config, real_bytes_per_page, max_seq_len, weights_bytes)
    params = KVCacheParams(dtype=torch.float32, num_layers=1, n_kv_heads=1, head_dim=1, page_size=page_size)
    return PagedKVCacheManager(params, pages, device="cpu", enable_prefix_caching=False)


def load_huggingface_pipeline(config: PipelineConfig) -> tuple[Any, HuggingFaceTextGenerationPipeline]:
    """(TextTokenizer, pipeline) for any AutoModelForCausalLM: a .gguf file, a local folder or a hub id.

    Weights are loaded in float32 (GGUF blocks dequantized by transformers) on the config's device."""
    from transformers import AutoModelForCausalLM

    from maxcli.pipelines.lib.hf_config import gguf_location
    from maxcli.pipelines.lib.hf_repo import huggingface_repo_for
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    where, gguf_file = gguf_location(huggingface_repo_for(config))
    kwargs: dict[str, Any] = {
        "revision": config.huggingface_model_revision,
        "trust_remote_code": config.trust_remote_code,
        "dtype": torch.float32,
    }
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    t0 = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--engine huggingface could not load {config.model_path}: {first}") from e
    model = model.to(config.device).eval()
    max_seq_len = _max_seq_len(config, model.config)
    weights_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv = _page_counter(config, model.config, max_seq_len, weights_bytes)
    tokenizer = TextTokenizer(
        where,
        revision=config.huggingface_model_revision,
        max_length=max_seq_len,
        trust_remote_code=config.trust_remote_code,
        gguf_file=gguf_file,
    )
    logger.info(
        "loaded %s through transformers (%s, float32) in %.2fs; %d pages x %d tokens of accounting",
        config.model_path, type(model).__name__, time.perf_counter() - t0, kv.total_num_pages, kv.page_size,
    )
    return tokenizer, HuggingFaceTextGenerationPipeline(config, model, kv, max_seq_len)
