from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.core.metrics import confusion_matrix
from domainvlm.core.plots import (
    HIT,
    MISS,
    _font_for,
    _wrap,
    confusion_matrix_png,
    preview_rgb,
    retrieval_grid_png,
)
from PIL import Image


def test_confusion_matrix_png(tmp_path: Path):
    matrix = confusion_matrix(torch.tensor([0, 1, 1, 2, 0]), torch.tensor([0, 1, 2, 2, 2]), 3)
    out = confusion_matrix_png(matrix, ["forest", "river", "airport"], tmp_path / "cm.png")
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]  # no temp file left behind
    with pytest.raises(ValueError, match="3 class names"):
        confusion_matrix_png(matrix[:2, :2], ["a", "b", "c"], tmp_path / "bad.png")


def solid(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.array(rgb, dtype=np.uint8), (8, 8, 1))


def test_retrieval_grid_frames_hits_green_misses_red_and_shows_each_image(tmp_path: Path):
    colours = {0: (0, 0, 255), 1: (255, 255, 0)}
    out = retrieval_grid_png(
        ["a blue lake", "a yellow field"],
        [[0, 1], [0, 1]],
        [{0}, {1}],
        lambda index: solid(colours[index]),
        tmp_path / "grid.png",
        tile=40,
        text_width=100,
    )
    cell, top = 40 + 6, 3  # tile + gap; rows start half a gap down
    with Image.open(out) as image:
        assert image.size == (100 + 2 * cell, 2 * cell)
        pixels = image.convert("RGB")
        frame = {
            (row, column): pixels.getpixel((100 + column * cell + 1, row * cell + top + 1))
            for row in range(2)
            for column in range(2)
        }
        centre = {
            (row, column): pixels.getpixel((100 + column * cell + 20, row * cell + top + 20))
            for row in range(2)
            for column in range(2)
        }
    assert frame == {(0, 0): HIT, (0, 1): MISS, (1, 0): MISS, (1, 1): HIT}
    assert centre[0, 0] == centre[1, 0] == colours[0]
    assert centre[0, 1] == centre[1, 1] == colours[1]
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]


def test_retrieval_grid_needs_one_ranking_per_query(tmp_path: Path):
    with pytest.raises(ValueError, match="one entry per query"):
        retrieval_grid_png(["q"], [[0], [1]], [{0}], lambda i: solid((0, 0, 0)), tmp_path / "g.png")


def test_preview_stretches_the_first_three_channels_together():
    ramp = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10)
    image = torch.cat([ramp, ramp / 2, torch.zeros(1, 10, 10), torch.full((1, 10, 10), 1e6)])
    rgb = preview_rgb(image)
    assert rgb.shape == (10, 10, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb, preview_rgb(image[:3]))  # the fourth band (NIR) is not shown
    low, high = np.percentile(image[:3].numpy(), [2, 98])
    expected = np.clip((ramp[0].numpy() - low) / (high - low), 0, 1) * 255
    assert np.array_equal(rgb[..., 0], expected.round().astype(np.uint8))
    grey = preview_rgb(ramp)
    assert np.array_equal(grey[..., 0], grey[..., 2])
    assert not preview_rgb(torch.ones(3, 4, 4)).any()  # a flat image: no division by zero


def test_preview_undoes_normalisation_so_grey_stays_grey():
    grey = torch.linspace(0, 1, 16).reshape(1, 4, 4).repeat(3, 1, 1)
    mean, std = [0.48, 0.46, 0.41], [0.27, 0.26, 0.28]  # open_clip's, different per channel
    normalised = (grey - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    tinted = preview_rgb(normalised)
    restored = preview_rgb(normalised, mean, std)
    assert not np.array_equal(tinted[..., 0], tinted[..., 2])
    assert np.abs(restored[..., 0].astype(int) - restored[..., 2].astype(int)).max() <= 1
    assert np.abs(restored.astype(int) - preview_rgb(grey).astype(int)).max() <= 1


def test_fonts_cover_accents_and_cyrillic():
    for text in ("edifícios", "bâtiment", "Пастбище"):
        assert Path(_font_for(text).path).name == "DejaVuSans.ttf"


def test_query_text_wraps_by_rendered_width():
    font = _font_for("x")
    text = "Спутниковый снимок: жилой район, с двумя зданиями в правом верхнем углу."
    lines = _wrap(text, font, 150)
    assert " ".join(lines) == text and len(lines) > 1
    assert all(font.getlength(line) <= 150 for line in lines)
    assert (
        "".join(_wrap("一座建筑位于左上方的住宅区航拍图像", font, 40))
        == "一座建筑位于左上方的住宅区航拍图像"
    )
