"""A small sample and a 2-step tiny.yaml checkpoint, made once and shared by the surgical tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.domains.surgical import PLUGIN

from tests.helpers import CONFIGS, fit_briefly


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("surgical") / "sample", size="small")


@pytest.fixture(scope="session")
def pretrained(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_briefly(
        CONFIGS / "surgical" / "tiny.yaml",
        tmp_path_factory.mktemp("surgical_fit"),
        {"root": str(sample_root), "batch_size": 8, "num_workers": 0},
    )
