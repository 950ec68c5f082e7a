"""Small statistics of benchmark and batch tables."""

from __future__ import annotations

import statistics


def mean_or_none(values) -> float | None:
    """The mean of the values that are not None (None if there are none)."""
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None
