"""Request contexts (mirrors `max.pipelines.core`)."""

from maxcli.pipelines.core.context import EmbeddingsContext, TextContext

__all__ = ["EmbeddingsContext", "TextContext"]
