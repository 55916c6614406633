"""A small sample and a 2-step tiny.yaml checkpoint, made once and shared by the remote-sensing
tests that need a real trained model (the untrusted-file and band-check tests)."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.domains.remote_sensing import PLUGIN

from tests.helpers import CONFIGS, fit_briefly


@pytest.fixture(scope="session")
def rs_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("rs_shared") / "sample", size="small")


@pytest.fixture(scope="session")
def rs_checkpoint(rs_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's GeoTIFFs are 4-band uint16 (B2, B3, B4, B8); tiny.yaml reads bands 3,2,1,4."""
    workdir = tmp_path_factory.mktemp("rs_fit")
    data = {"root": str(rs_sample), "batch_size": 8, "num_workers": 0}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        fit_briefly(CONFIGS / "remote_sensing" / "tiny.yaml", workdir, data)
    return next(workdir.rglob("last.ckpt"))
