"""A small sample and a 2-step pretraining checkpoint, made once and shared by the medical tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.domains.medical import PLUGIN

from tests.helpers import CONFIGS, fit_briefly


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("medical") / "sample", size="small")


@pytest.fixture(scope="session")
def pretrained(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = CONFIGS / "medical" / "tiny_pretrain.yaml"
    data = {"root": str(sample_root), "batch_size": 8}
    return fit_briefly(config, tmp_path_factory.mktemp("pretrain"), data)
