from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tiny models spend more time synchronising threads than computing: one thread is several times
# faster here, and keeps the suite steady when the machine is busy.
torch.set_num_threads(1)


@pytest.fixture
def toy_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Register tests/plugins/toy_domain.py as an installed plugin through a real entry point.

    A ``*.dist-info`` folder on ``sys.path`` is exactly what installing a package creates, so core
    discovers the toy domain the way it discovers any third-party one.
    """
    from domainvlm.core.registry import load_domains

    site = tmp_path / "site"
    dist_info = site / "toy_domain_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-domain-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[domainvlm.domains]\ntoy = tests.plugins.toy_domain:PLUGIN\n"
    )
    monkeypatch.syspath_prepend(str(site))
    load_domains.cache_clear()
    yield load_domains()["toy"]
    load_domains.cache_clear()
