from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import register_plugin

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# Tiny models spend more time synchronising threads than computing: one thread is several times
# faster here, and keeps the suite steady when the machine is busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def cache_directory(tmp_path_factory: pytest.TempPathFactory):
    """domainvlm's cache (band statistics) in a temp folder, not the user's ~/.cache."""
    from domainvlm.core.cache import CACHE_ENV

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("domainvlm_cache")))
        yield


@pytest.fixture
def toy_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """tests/plugins/toy_domain.py, installed as a plugin through a real entry point."""
    from domainvlm.core.registry import load_domains

    yield register_plugin(tmp_path, monkeypatch, "toy", "tests.plugins.toy_domain:PLUGIN")
    load_domains.cache_clear()


@pytest.fixture
def colours_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """tests/plugins/colours.py installed as the ``colours`` domain, its hook log emptied."""
    from domainvlm.core.registry import load_domains

    from tests.plugins.colours import hook_calls

    hook_calls.clear()
    yield register_plugin(tmp_path, monkeypatch, "colours", "tests.plugins.colours:PLUGIN")
    load_domains.cache_clear()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gpu: needs a CUDA GPU, skipped without one (benchmarks/gpu_check.sh runs them)"
    )
