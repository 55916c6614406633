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
    workdir = tmp_path_factory.mktemp("pretrain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        config = CONFIGS / "medical" / "tiny_pretrain.yaml"
        fit_briefly(config, workdir, {"root": str(sample_root), "batch_size": 8})
    return workdir / "runs/medical/tiny_pretrain/checkpoints/last.ckpt"
