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
    assert on_disk <= set(config["packages"]), (
        f"add to pyproject.toml: {on_disk - set(config['packages'])}"
    )


def test_the_imported_package_is_the_namespaced_one() -> None:
    import domainvlm.core.cli

    assert domainvlm.core.cli.__name__ == "domainvlm.core.cli"
    assert Path(domainvlm.core.cli.__file__).resolve() == ROOT / "core" / "cli.py"
