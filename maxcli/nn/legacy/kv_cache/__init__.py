"""`max.nn.legacy.kv_cache` import path of the seeds: the same objects as `maxcli.kv_cache`."""

from typing import Any

import maxcli.kv_cache as _kv_cache
from maxcli.kv_cache import *  # noqa: F403  (re-export is the point of this module)
from maxcli.kv_cache import __all__ as __all__


def __getattr__(name: str) -> Any:
    return getattr(_kv_cache, name)
