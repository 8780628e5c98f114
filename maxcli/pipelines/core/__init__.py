"""Request contexts (mirrors `max.pipelines.core`)."""

from maxcli.pipelines.core.context import EmbeddingsContext, TextAndVisionContext, TextContext

__all__ = ["EmbeddingsContext", "TextAndVisionContext", "TextContext"]
