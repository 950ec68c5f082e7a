"""The user cache folder for things that are slow to build and cheap to keep (silhouette banks, the native
kernels, traced UNet graphs, small priors' bundles): $THREEDISTILL_CACHE, else $XDG_CACHE_HOME/threedistill, else
~/.cache/threedistill."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PRIOR_CACHE_ENV = "THREEDISTILL_PRIOR_CACHE"  # 0 / off: no prior bundles or traced UNet graphs read or written


PRIOR_CACHE_VALUES = {v: True for v in ("1", "on", "true", "yes")} | {v: False for v in ("0", "off", "false", "no")}


def prior_cache_enabled() -> bool:
    """Whether the prior's disk caches (priors/bundle.py, priors/graph.py) are used: unless $THREEDISTILL_PRIOR_CACHE
    is 0, off, false or no (a first run's behaviour, e.g. to time it); another value is a one-line ConfigError."""
    value = os.environ.get(PRIOR_CACHE_ENV, "1").strip().lower()
    if value not in PRIOR_CACHE_VALUES:
        from ..errors import ConfigError

        raise ConfigError(
            f"{PRIOR_CACHE_ENV} must be one of {', '.join(PRIOR_CACHE_VALUES)}, got {os.environ[PRIOR_CACHE_ENV]!r}"
        )
    return PRIOR_CACHE_VALUES[value]


def installed_version(dist: str) -> str:
    """The installed version of the distribution `dist` ("-" if it is not installed), for cache keys."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def cache_dir(kind: str) -> Path:
    root = (
        os.environ.get("THREEDISTILL_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "threedistill"
    )
    path = Path(root) / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_key(**settings) -> str:
    """A short stable name for a set of JSON-serialisable settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
