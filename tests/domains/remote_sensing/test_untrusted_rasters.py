"""GDAL opens only what the user meant: no VRT (under any name), no URL, no sidecar files, and one
pixel cap for every raster, through the reader, `domainvlm zeroshot` and `POST /v1/zeroshot`."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.images import ImageReadError, ImageTooLargeError, read_image
from domainvlm.domains.remote_sensing.rasters import (
    SAFE_GDAL_ENV,
    RasterReadError,
    raster_shape,
    read_raster,
)

from tests.helpers import post_zeroshot, run_cli, write_geotiff

SECRET = bytes(range(256)) * 32
"""Stands in for /etc/passwd: a file on the server no upload should ever turn into pixels."""


def raw_vrt(path: Path, target: Path, side: int = 16, bands: int = 4) -> Path:
    """A VRT that reads ``target``'s bytes as ``bands`` uint16 bands (the shape the model wants)."""
    band_xml = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{band}" subClass="VRTRawRasterBand">'
        f'<SourceFilename relativetoVRT="0">{target}</SourceFilename>'
        f"<ImageOffset>{(band - 1) * 2}</ImageOffset><PixelOffset>2</PixelOffset>"
        f"<LineOffset>{2 * side}</LineOffset><ByteOrder>LSB</ByteOrder></VRTRasterBand>"
        for band in range(1, bands + 1)
    )
    path.write_text(
        f'<VRTDataset rasterXSize="{side}" rasterYSize="{side}">{band_xml}</VRTDataset>'
    )
    return path


def curl_vrt(path: Path, url: str, bands: int = 4) -> Path:
    """A VRT whose ``bands`` uint16 bands come from a URL (GDAL fetches it when pixels are read)."""
    band_xml = "".join(
        f'<VRTRasterBand dataType="UInt16" band="{band}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">/vsicurl/{url}</SourceFilename>'
        "<SourceBand>1</SourceBand></SimpleSource></VRTRasterBand>"
        for band in range(1, bands + 1)
    )
    path.write_text(f'<VRTDataset rasterXSize="4" rasterYSize="4">{band_xml}</VRTDataset>')
    return path


@contextmanager
def listening_port() -> Iterator[tuple[int, list[bytes]]]:
    """A local TCP port that records the first bytes of every connection made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    received: list[bytes] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                received.append(connection.recv(256))

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        time.sleep(0.2)  # a request GDAL sent would have arrived by now
        server.close()
        thread.join(2)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "server_secret.bin"
    path.write_bytes(SECRET)
    return path


def test_reader_refuses_a_vrt_whatever_its_name(tmp_path: Path, secret: Path):
    for name in ("scene.vrt", "scene.tif", "scene.TIFF"):
        vrt = raw_vrt(tmp_path / name, secret)
        with pytest.raises(RasterReadError, match="not a GeoTIFF") as info:
            read_raster(vrt)
        assert info.value.path == vrt
        with pytest.raises(RasterReadError, match="not a GeoTIFF"):
            raster_shape(vrt)
    with pytest.raises(ImageReadError, match="not a GeoTIFF"):
        read_image(tmp_path / "scene.tif")


def test_a_vsicurl_source_is_never_fetched(tmp_path: Path):
    with listening_port() as (port, received):
        vrt = curl_vrt(tmp_path / "remote.tif", f"http://127.0.0.1:{port}/scene.tif")
        with pytest.raises(RasterReadError, match="not a GeoTIFF"):
            read_raster(vrt)
        # The environment alone keeps /vsicurl/ shut, even for a driver that follows sources.
        with (
            rasterio.Env(**SAFE_GDAL_ENV),
            pytest.raises(rasterio.errors.RasterioError),
            rasterio.open(vrt) as dataset,
        ):
            dataset.read()
    assert received == []


def test_sidecar_files_are_not_looked_up(tmp_path: Path):
    tif = write_geotiff(tmp_path / "scene.tif", np.full((1, 4, 4), 7, np.uint16), nodata=None)
    (tmp_path / "scene.tif.aux.xml").write_text(
        '<PAMDataset><PAMRasterBand band="1"><NoDataValue>7</NoDataValue></PAMRasterBand>'
        "</PAMDataset>"
    )
    sample = read_raster(tif)
    assert sample.valid_mask.all() and sample.array.sum() == 7 * 16


def test_cli_zeroshot_refuses_vrts_and_fetches_nothing(
    rs_checkpoint: Path, tmp_path: Path, secret: Path, capsys
):
    disguised = raw_vrt(tmp_path / "disguised.tif", secret)
    with listening_port() as (port, received):
        remote = curl_vrt(tmp_path / "remote.tif", f"http://127.0.0.1:{port}/x.tif")
        code, lines, _ = run_cli(
            capsys, "zeroshot", "--checkpoint", rs_checkpoint, "--classes", "forest,river",
            disguised, remote,
        )  # fmt: skip
    assert received == [] and code == 1
    answers = [json.loads(line) for line in lines]
    assert [answer["image"] for answer in answers] == [str(disguised), str(remote)]
    assert all("not a GeoTIFF" in answer["error"] and "label" not in answer for answer in answers)


def test_service_refuses_vrt_uploads_and_fetches_nothing(rs_checkpoint: Path, secret: Path):
    encoder = load_encoder(str(rs_checkpoint))
    with listening_port() as (port, received):
        uploads = {
            "raw.tif": raw_vrt(secret.parent / "raw.vrt", secret).read_bytes(),
            "curl.tif": curl_vrt(secret.parent / "curl.vrt", f"http://127.0.0.1:{port}/x").read_bytes(),
            "raw.vrt": raw_vrt(secret.parent / "raw2.vrt", secret).read_bytes(),
        }  # fmt: skip
        for name, content in uploads.items():
            response = post_zeroshot(encoder, name, content)
            assert response.status_code == 400, (name, response.json())
            assert name in response.json()["error"] and "label" not in response.json()
    assert received == []


def test_service_pixel_cap_covers_remote_sensing_rasters(rs_checkpoint: Path, tmp_path: Path):
    """64 x 64 x 4 bands = 16,384 pixels: over a 10,000 cap, although 64 x 64 alone is not."""
    chip = write_geotiff(tmp_path / "chip.tif", np.full((4, 64, 64), 900, np.uint16)).read_bytes()
    encoder = load_encoder(str(rs_checkpoint))
    refused = post_zeroshot(encoder, "chip.tif", chip, max_pixels=10_000)
    assert refused.status_code == 413
    assert "chip.tif: 16,384 pixels, above the limit of 10,000" in refused.json()["error"]
    assert post_zeroshot(encoder, "chip.tif", chip, max_pixels=20_000).status_code == 200


def test_a_sparse_geotiff_bomb_is_refused_from_its_header(tmp_path: Path):
    """60,000² x 4 bands of uint16 would be 29 GB decoded; the file holds no tiles at all."""
    bomb = tmp_path / "bomb.tif"
    profile = dict(driver="GTiff", width=60_000, height=60_000, count=4, dtype="uint16")
    with rasterio.open(bomb, "w", tiled=True, sparse_ok=True, **profile):
        pass
    assert bomb.stat().st_size < 2_000_000
    started = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="14,400,000,000 pixels"):
        read_image(bomb)
    assert time.perf_counter() - started < 2
