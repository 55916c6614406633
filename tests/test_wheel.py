"""`pip install .` (not editable): the wheel holds one `domainvlm` package, configs included, and the
installed console script finds its packaged configs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("core", "domains", "retrieval_db", "configs", "pyproject.toml", "README.md")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the working tree (the build leaves build/ beside its input)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(work / "dist"), str(source)], check=True)
    (built,) = (work / "dist").glob("domainvlm-*.whl")
    return built


def test_wheel_installs_one_domainvlm_namespace_with_configs(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"domainvlm", wheel.name.split("-py")[0] + ".dist-info"}, tops
    python_files = {
        "domainvlm/" + path.relative_to(ROOT).as_posix()
        for top in ("core", "domains", "retrieval_db")
        for path in (ROOT / top).rglob("*.py")
    }
    assert python_files <= set(names), python_files - set(names)
    configs = {
        "domainvlm/" + path.relative_to(ROOT).as_posix()
        for path in (ROOT / "configs").rglob("*.yaml")
    }
    assert configs and configs <= set(names), configs - set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "domainvlm = domainvlm.core.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


@pytest.mark.slow  # about 25 s: pip install, then a CLI process importing torch
def test_installed_command_runs_elsewhere_with_packaged_configs(wheel: Path, tmp_path) -> None:
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
    subprocess.run([*install, str(wheel)], check=True)
    assert not (target / "core").exists() and not (target / "domains").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [str(target / "bin" / "domainvlm"), "fit", "--config", "remote_sensing/tiny.yaml"]
    done = subprocess.run(
        [*command, "--print_config"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "domainvlm.domains.remote_sensing.system.RSMCLIP" in done.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import domainvlm.core.cli as m; print(m.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()) == target / "domainvlm" / "core" / "cli.py"
