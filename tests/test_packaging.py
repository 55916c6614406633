"""The installed layout: every package of the repository ships under the one `domainvlm` namespace."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"domainvlm": "."}
    on_disk = {
        "domainvlm." + ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("core", "domains", "retrieval_db")
        for init in (ROOT / top).rglob("__init__.py")
    }
    data_folders = {  # configs and model configs ship as data-only packages
        "domainvlm." + ".".join(folder.relative_to(ROOT).parts)
        for pattern in ("configs/**/*.yaml", "domains/*/model_configs/*.json")
        for folder in {path.parent for path in ROOT.glob(pattern)}
    }
    missing = (on_disk | data_folders) - set(config["packages"])
    assert not missing, f"add to pyproject.toml: {missing}"


def test_the_imported_package_is_the_namespaced_one() -> None:
    import domainvlm.core.cli

    assert domainvlm.core.cli.__name__ == "domainvlm.core.cli"
    assert Path(domainvlm.core.cli.__file__).resolve() == ROOT / "core" / "cli.py"
