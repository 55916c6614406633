"""Training never writes into the user's dataset: band statistics go to domainvlm's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.core.cache import CACHE_ENV, cache_directory
from domainvlm.domains.remote_sensing import PLUGIN
from domainvlm.domains.remote_sensing.datamodule import RSSceneDataModule


def listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_band_statistics_are_cached_outside_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    root = PLUGIN.write_sample(tmp_path / "sample", size="small")
    before = listing(root)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    mean, std = RSSceneDataModule(root=str(root), bands=[3, 2, 1, 4]).normalisation()
    assert listing(root) == before  # not one file added or touched in the dataset
    cached = list((tmp_path / "cache" / "band_statistics").glob("RSSceneDataModule-*.json"))
    assert len(cached) == 1
    # A second DataModule reads the cache: the same numbers without recomputing.
    again = RSSceneDataModule(root=str(root), bands=[3, 2, 1, 4]).normalisation()
    assert again == (mean, std) and len(mean) == 4 and all(s > 0 for s in std)


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert cache_directory() == Path("/somewhere/cache/domainvlm")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_directory() == Path.home() / ".cache" / "domainvlm"
