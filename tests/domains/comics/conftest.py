"""A small comics sample and a 2-step checkpoint, made once and shared by the comics tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.domains.comics import PLUGIN

from tests.helpers import CONFIGS, fit_briefly


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("comics") / "sample", size="small")


@pytest.fixture(scope="session")
def checkpoint(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = {"root": str(sample_root), "batch_size": 4, "num_workers": 0}
    return fit_briefly(CONFIGS / "comics" / "tiny.yaml", tmp_path_factory.mktemp("fit"), data)
