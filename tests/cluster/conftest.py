"""Fixtures for cluster tests: `cluster_factory` builds embedded clusters and stops them afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cluster_helpers import TEXTS, Cluster, add_data, small_lm_yaml

__all__ = ["TEXTS", "Cluster", "add_data", "small_lm_yaml"]


@pytest.fixture()
def cluster_factory(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(pnodes: int = 2, **kwargs: object) -> Cluster:
        c = Cluster(tmp_path / f"state{len(made)}", pnodes, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()
