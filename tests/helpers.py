"""Helpers shared by test modules: fixture files, checkpoints, plugins and short fits.

Test modules import from here (and from the test plugins under ``tests/plugins``), never from each
other, so a test module can be read, moved or deleted on its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

CONFIGS = Path(__file__).parents[1] / "configs"

ENCODER = {"name": "test-encoder", "sha256": "a" * 64}
OTHER_ENCODER = {"name": "test-encoder", "sha256": "b" * 64}
"""Encoder identities for knowledge bases built from vectors the tests make up."""


def save_checkpoint(system: Any, path: Path) -> Path:
    """What Lightning writes for a ``BaseSystem``, minus the trainer state: enough for
    ``load_system``."""
    checkpoint = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def colour_png(path: Path, rgb: tuple[int, int, int], size: int = 8, seed: int = 0) -> Path:
    """A noisy square of one colour (noise ±20 per channel), seeded."""
    from PIL import Image

    noise = np.random.default_rng(seed).integers(-20, 21, (size, size, 3))
    pixels = np.clip(np.asarray(rgb)[None, None] + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_geotiff(
    path: Path,
    data: np.ndarray,
    nodata: float | None = 0,
    origin: tuple[float, float] = (440_000, 5_420_000),
    **profile: Any,
) -> Path:
    """A ``[bands, rows, cols]`` array as a GeoTIFF in EPSG:32631 with 10 m pixels from
    ``origin`` (west, north); ``profile`` adds rasterio creation options (tiling, compression)."""
    import rasterio
    from rasterio.transform import from_origin

    path.parent.mkdir(parents=True, exist_ok=True)
    options = dict(
        driver="GTiff",
        width=data.shape[2],
        height=data.shape[1],
        count=data.shape[0],
        dtype=data.dtype.name,
        crs="EPSG:32631",
        transform=from_origin(*origin, 10, 10),
        nodata=nodata,
    )
    with rasterio.open(path, "w", **(options | profile)) as dst:
        dst.write(data)
    return path


def register_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: str) -> Any:
    """Install ``target`` (``module:attribute``) as domain ``name`` through a real entry point.

    A ``*.dist-info`` folder on ``sys.path`` is exactly what installing a package creates, so core
    discovers the domain the way it discovers any third-party one. Returns the loaded plugin;
    the caller clears ``load_domains``' cache again when done.
    """
    from domainvlm.core.registry import load_domains

    install_entry_point(tmp_path, monkeypatch, name, target)
    return load_domains()[name]


def command_domain(name: str, commands: dict[str, Any]) -> Any:
    """A minimal ``DomainPlugin`` named ``name`` with the given ``DomainCommand``s, for tests of
    plugin discovery and per-domain commands."""
    from domainvlm.core.registry import DomainPlugin

    return DomainPlugin(
        name=name,
        description=f"the {name} test domain",
        modalities=("text",),
        input_format="none",
        channels="none",
        data_licence="none",
        configs_dir=Path("/nonexistent"),
        write_sample=lambda out_dir, size="small", seed=0: Path(out_dir),
        commands=commands,
    )


def install_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, target: str
) -> None:
    """The entry point of ``register_plugin`` without loading it (for plugins that fail to load);
    clears ``load_domains``' cache so the next call finds it."""
    from domainvlm.core.registry import load_domains

    dist_info = tmp_path / "site" / f"{name}_plugin-0.1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}-plugin\nVersion: 0.1\n"
    )
    (dist_info / "entry_points.txt").write_text(f"[domainvlm.domains]\n{name} = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    load_domains.cache_clear()


def run_cli(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, list[str], str]:
    """``domainvlm ARGV`` in this process: exit code, non-blank stdout lines, stderr."""
    from domainvlm.core.cli import main

    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, [line for line in captured.out.splitlines() if line.strip()], captured.err


def fit_briefly(config: Path, out_dir: Path, data: dict, model: dict | None = None) -> Path:
    """Two training steps of a shipped config through ``domainvlm fit``, as a user runs it, with
    ``out_dir`` as the working directory; returns the run's ``last.ckpt``.

    ``data`` and ``model`` update the config's ``init_args``; the config actually run is written
    to ``out_dir``, and the run directory is the config's, under ``out_dir``.
    """
    from domainvlm.core.cli import main

    settings = yaml.safe_load(config.read_text())
    settings["trainer"].update(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False
    )
    settings["trainer"].pop("max_time", None)
    settings["model"]["init_args"].update(model or {})
    settings["data"]["init_args"].update(data)
    path = out_dir / config.name
    path.write_text(yaml.safe_dump(settings))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(out_dir)
        assert main(["fit", "--config", str(path)]) == 0
    return out_dir / settings["trainer"]["default_root_dir"] / "checkpoints" / "last.ckpt"


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, the kind of structure embeddings have."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def records_for(n: int) -> list[dict]:
    """Alternating levels and languages, so filters select known, interleaved subsets."""
    return [
        {"row": i, "level": "object" if i % 3 == 0 else "scene", "lang": ["en", "de"][i % 2]}
        for i in range(n)
    ]


def post_zeroshot(
    encoder: Any, name: str, content: bytes, classes: str = "a,b", max_pixels: int | None = None
) -> Any:
    """``POST /v1/zeroshot`` of one upload to a fresh service around ``encoder``."""
    from domainvlm.core.service import ServiceLimits, create_app
    from fastapi.testclient import TestClient

    limits = ServiceLimits() if max_pixels is None else ServiceLimits(max_pixels=max_pixels)
    client = TestClient(create_app(encoder, limits=limits))
    files = {"image": (name, content, "application/octet-stream")}
    return client.post("/v1/zeroshot", files=files, data={"classes": classes})
