"""`maxcli.graph.weights` (mirrors `max.graph.weights`)."""

from maxcli.config.enums import WeightsFormat

__all__ = ["WeightsFormat"]
