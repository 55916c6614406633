"""Transform interface: multi-band images, multi-crop views, video clips and captions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from domainvlm.core.transforms import (
    DINO_PHOTOMETRIC,
    ImageTransform,
    MultiCrop,
    TextTransform,
    VideoClipTransform,
)
from torch.utils.data import DataLoader, Dataset


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """Band 0 holds the column index, band 1 the row index, band 2 a constant."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([cols, rows, np.full_like(cols, 7.0)], axis=-1)


@pytest.mark.parametrize("bands", [4, 13])
def test_uint16_multiband_images_keep_their_bands(bands: int) -> None:
    image = np.random.default_rng(0).integers(0, 10000, (40, 50, bands), dtype=np.uint16)
    for train in (True, False):
        transform = ImageTransform(
            32, [0.1] * bands, [0.2] * bands, train=train, max_pixel_value=10000, vflip=True
        )
        out = transform(image)
        assert out.shape == (bands, 32, 32) and out.dtype == torch.float32


def test_normalisation_is_per_band() -> None:
    values = np.array([1000, 2000, 3000, 65535], dtype=np.uint16)
    image = np.broadcast_to(values, (20, 20, 4)).copy()
    mean, std = [0.1, 0.2, 0.3, 0.5], [0.05, 0.1, 0.2, 0.25]
    out = ImageTransform(16, mean, std, train=True, max_pixel_value=10000, rot90=True)(image)
    expected = (values / 10000 - np.array(mean)) / np.array(std)
    # A constant image stays constant under any crop: each band is exactly its normalised value.
    assert torch.allclose(
        out, torch.tensor(expected, dtype=torch.float32)[:, None, None], atol=1e-4
    )


def test_eval_is_resize_then_centre_crop_and_deterministic() -> None:
    image = _coordinate_image(40, 50)
    transform = ImageTransform(40, [0.0] * 3, [1.0] * 3, max_pixel_value=1.0)
    out = transform(image)
    # The short side already equals the size: only the centre crop (columns 5..44) is applied.
    assert torch.equal(out, torch.from_numpy(image[:, 5:45].transpose(2, 0, 1).copy()))
    fresh = ImageTransform(40, [0.0] * 3, [1.0] * 3, max_pixel_value=1.0)
    assert torch.equal(transform(image), fresh(image))
    smaller = ImageTransform(20, [0.0] * 3, [1.0] * 3, max_pixel_value=1.0)(image)
    # Halving to 20x25 samples column 2j + 0.5; the centre crop then starts at column 2.
    assert smaller.shape == (3, 20, 20)
    assert torch.allclose(smaller[0, 0], 2 * torch.arange(2, 22, dtype=torch.float32) + 0.5)
    assert torch.allclose(smaller[1, :, 0], 2 * torch.arange(20, dtype=torch.float32) + 0.5)


def test_train_crops_vary_and_follow_the_seed() -> None:
    image = _coordinate_image(64, 64)
    settings = dict(size=16, mean=[0.0] * 3, std=[1.0] * 3, train=True, max_pixel_value=1.0)
    first = ImageTransform(**settings, seed=5)
    second = ImageTransform(**settings, seed=5)
    draws = [first(image) for _ in range(4)]
    assert all(torch.equal(a, second(image)) for a in draws)
    assert not torch.equal(draws[0], draws[1])
    assert first.config()["seed"] == 5 and ImageTransform(**first.config())(image).shape[0] == 3


def test_crop_area_stays_inside_the_scale_range() -> None:
    image = _coordinate_image(100, 100)
    transform = ImageTransform(
        20, [0.0] * 3, [1.0] * 3, train=True, scale=(0.25, 0.36), hflip=False, seed=0
    )
    for _ in range(10):
        out = transform(image).numpy() * 255.0  # undo max_pixel_value=255
        # Bilinear resizing of a ramp keeps it linear: its span gives the crop size.
        span_x = (out[0, 0, -1] - out[0, 0, 0]) * 20 / 19
        span_y = (out[1, -1, 0] - out[1, 0, 0]) * 20 / 19
        assert 0.25 - 0.03 <= span_x * span_y / 100**2 <= 0.36 + 0.03


def test_wrong_band_count_is_a_clear_error() -> None:
    transform = ImageTransform(16, [0.5] * 4, [0.2] * 4)
    with pytest.raises(ValueError, match="has 3 bands .* mean/std for 4"):
        transform(np.zeros((20, 20, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="one value per band"):
        ImageTransform(16, [0.5] * 4, [0.2] * 3)
    grey = ImageTransform(16, [0.5], [0.25])(np.full((20, 20), 255, dtype=np.uint8))
    assert grey.shape == (1, 16, 16) and torch.allclose(grey, torch.full_like(grey, 2.0))


def test_multicrop_returns_globals_then_locals() -> None:
    image = np.random.default_rng(0).random((96, 96, 4)).astype(np.float32)
    views = MultiCrop(
        48, 16, [0.0] * 4, [1.0] * 4, n_global=2, n_local=5, max_pixel_value=1.0, seed=0
    )(image)
    assert [tuple(view.shape) for view in views] == [(4, 48, 48)] * 2 + [(4, 16, 16)] * 5
    assert not torch.equal(views[0], views[1])


def _photometric(steps: dict[str, float]) -> ImageTransform:
    return ImageTransform(
        16,
        [0.0] * 3,
        [1.0] * 3,
        train=True,
        scale=(1.0, 1.0),
        hflip=False,
        photometric=steps,
        seed=0,
    )


def test_photometric_steps_on_rgb_pixels_in_unit_range() -> None:
    orange = np.empty((24, 24, 3), np.uint8)
    orange[:] = (200, 100, 50)
    # solarisation inverts every value above half the white level, on [0, 1] pixels
    solarised = _photometric({"solarize": 1.0})(orange)
    expected = torch.tensor([55 / 255, 100 / 255, 50 / 255])[:, None, None].expand(3, 16, 16)
    assert torch.allclose(solarised, expected, atol=1e-5)
    # grayscale: three equal channels, the ITU-R 601 luma of the colour
    grey = _photometric({"grayscale": 1.0})(orange)
    luma = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    assert torch.allclose(grey, torch.full_like(grey, luma), atol=2e-3)
    jittered = _photometric({"jitter": 1.0})(orange)
    assert not torch.allclose(jittered[:, 0, 0], torch.tensor([200, 100, 50]) / 255, atol=1e-2)
    # blur: a checkerboard loses contrast
    board = (np.indices((16, 16)).sum(axis=0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    assert _photometric({"blur": 1.0})(board).std() < 0.8 * _photometric({})(board).std()


def test_photometric_steps_refuse_what_they_cannot_mean() -> None:
    with pytest.raises(ValueError, match="RGB imagery, 3 bands; this transform has 4"):
        ImageTransform(16, [0.5] * 4, [0.2] * 4, train=True, photometric={"jitter": 0.8})
    with pytest.raises(ValueError, match="training transforms only"):
        ImageTransform(16, [0.5] * 3, [0.2] * 3, photometric={"jitter": 0.8})
    with pytest.raises(ValueError, match="unknown photometric steps"):
        ImageTransform(16, [0.5] * 3, [0.2] * 3, train=True, photometric={"sharpen": 1.0})
    uint16 = np.full((20, 20, 3), 4000, np.uint16)
    with pytest.raises(ValueError, match="max_pixel_value=255"):
        _photometric({"jitter": 0.8})(uint16)


def test_multicrop_photometric_views_follow_dino() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    crops = MultiCrop(32, 16, [0.5] * 3, [0.25] * 3, n_global=3, n_local=2, photometric=True)
    recipes = [view.settings["photometric"] for view in crops.global_views]
    assert recipes == [DINO_PHOTOMETRIC["global_1"], DINO_PHOTOMETRIC["global_2"]]
    assert crops.local_view.settings["photometric"] == DINO_PHOTOMETRIC["local"]
    views = crops(image)
    assert [tuple(view.shape) for view in views] == [(3, 32, 32)] * 3 + [(3, 16, 16)] * 2
    plain = MultiCrop(32, 16, [0.5] * 4, [0.25] * 4, n_global=2, n_local=1)
    assert plain.global_views == [plain.global_view]
    assert plain.global_view.settings["photometric"] is None
    with pytest.raises(ValueError, match="multispectral"):
        MultiCrop(32, 16, [0.5] * 4, [0.25] * 4, photometric=True)


def test_every_frame_of_a_clip_gets_the_same_crop() -> None:
    base = _coordinate_image(60, 80)
    # Frames are copies of one ramp image brightened by t; only identical geometry keeps the
    # frame-to-frame difference exactly t everywhere.
    frames = np.stack([base + t for t in range(4)])
    transform = VideoClipTransform(
        24, [0.0] * 3, [1.0] * 3, train=True, vflip=True, rot90=True, max_pixel_value=1.0, seed=0
    )
    boxes = set()
    for _ in range(5):
        clip = transform(frames)
        assert clip.shape == (4, 3, 24, 24)
        for t in range(1, 4):
            assert torch.allclose(clip[t] - clip[0], torch.full_like(clip[0], float(t)), atol=1e-3)
        boxes.add((round(clip[0, 0].min().item(), 2), round(clip[0, 1].min().item(), 2)))
    assert len(boxes) > 1  # but different clips get different crops


def test_clip_frames_must_share_a_shape() -> None:
    transform = VideoClipTransform(16, [0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="share one shape"):
        transform([np.zeros((20, 20, 3)), np.zeros((24, 20, 3))])


class _SameImage(Dataset):
    def __init__(self, transform: ImageTransform) -> None:
        self.transform = transform
        self.image = _coordinate_image(64, 64)

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.image)


def test_data_loader_workers_draw_different_reproducible_crops() -> None:
    transform = ImageTransform(8, [0.0] * 3, [1.0] * 3, train=True, max_pixel_value=1.0)

    def crops() -> list[torch.Tensor]:
        torch.manual_seed(0)
        return list(DataLoader(_SameImage(transform), batch_size=1, num_workers=2))

    first = crops()
    assert len({tuple(crop.flatten().tolist()) for crop in first}) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, crops()))


def test_text_transform_picks_and_tidies_captions() -> None:
    captions = ["  Many  planes\tparked ", "Cafe\u0301 near a river", "a bridge"]
    assert TextTransform()(captions) == "Many planes parked"
    assert TextTransform()("Cafe\u0301") == "Caf\u00e9"
    train = TextTransform(train=True, seed=0)
    picks = [train(captions) for _ in range(30)]
    assert set(picks) == {"Many planes parked", "Caf\u00e9 near a river", "a bridge"}
    again = TextTransform(train=True, seed=0)
    assert [again(captions) for _ in range(30)] == picks
    with pytest.raises(ValueError, match="no non-empty caption"):
        TextTransform()(["  ", ""])
