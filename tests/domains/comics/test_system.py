"""The comics system: losses on a real batch, the encoder on page crops, the one score API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.datamodule import collate
from domainvlm.domains.comics.closure_data import ClosureInstance
from domainvlm.domains.comics.comics_folds import read_fold
from domainvlm.domains.comics.datamodule import ComicsDataModule, letter_as, swap_regions
from domainvlm.domains.comics.pages import Panel, TextBox
from domainvlm.domains.comics.system import ComicsCLIP


def test_batch_and_losses(sample_root: Path) -> None:
    torch.manual_seed(0)
    data = ComicsDataModule(root=str(sample_root), batch_size=4)
    dataset = data.dataset("train")
    item = dataset[0]
    assert item["panels"].shape == (4, 3, 48, 48) and item["negatives"].shape == (2, 3, 48, 48)
    assert item["characters"].shape == (2, 3, 48, 48) and (item["character_ids"] >= 0).all()
    assert len(item["texts"]) == 4 and all(item["texts"])
    # the true panel, its swapped-texts copy and two copies lettered with the negatives' texts
    lettered = item["lettered"]
    assert lettered.shape == (4, 3, 48, 48) and item["has_swap"] and item["has_borrowed"]
    assert all(not torch.equal(lettered[0], lettered[k]) for k in (1, 2, 3))
    system = ComicsCLIP()
    losses = system.compute_losses(collate([dataset[i] for i in range(4)]), "train")
    assert {"clip", "character", "closure", "closure_swap", "closure_borrowed"} <= set(losses)
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert system.scorer.head.weight.grad is not None
    assert system.model.visual.conv1.weight.grad.abs().sum() > 0


def test_score_api_on_every_option_kind(checkpoint: Path, sample_root: Path) -> None:
    system = load_system(checkpoint)
    instance = read_fold(sample_root / "comics", "text_cloze", "test_easy")[0]
    text_logits = system.score(
        instance.context_images,
        instance.options,
        instance.context_texts,
        target_image=instance.target_image,
    )
    assert text_logits.shape == (3,)
    visual: ClosureInstance = read_fold(sample_root / "comics", "visual_cloze", "test_easy")[0]
    image_logits = system.score(
        [Path(p) for p in visual.context_images], [Path(p) for p in visual.options]
    )
    assert image_logits.shape == (3,)
    # a tensor of options and a masked middle position
    options = torch.stack([system.encoder().load_image(p) for p in visual.options])
    filled = system.score(visual.context_images, options, mask_index=1)
    assert filled.shape == (3,) and not torch.allclose(filled, image_logits)


def test_encoder_reads_page_crops(checkpoint: Path, sample_root: Path) -> None:
    encoder = load_system(checkpoint).encoder()
    page = next((sample_root / "comix/images").rglob("*.jpg"))
    whole = encoder.load_image(page)
    crop = encoder.load_image(f"{page}#xywh=8,8,100,90")
    assert whole.shape == crop.shape == (3, 48, 48)
    assert not torch.allclose(whole, crop)


def test_near_negatives_come_from_around_the_window(sample_root: Path) -> None:
    data = ComicsDataModule(root=str(sample_root), negatives=2, near_negatives=1.0)
    dataset = data.dataset("train")
    book, t = dataset.windows[0]
    panels = dataset.panels[book]
    outside = [i for i in range(len(panels)) if not t - 3 <= i <= t]
    nearest = sorted(outside, key=lambda i: min(abs(i - t), abs(i - t + 3)))[:4]
    item = dataset[0]
    assert set(item["negative_texts"]) <= {panels[i][1].dialogue for i in nearest}
    window = {panel.dialogue for _, panel in panels[t - 3 : t + 1]}
    assert not set(item["negative_texts"]) & window


def test_cast_negatives_show_other_characters(sample_root: Path) -> None:
    data = ComicsDataModule(
        root=str(sample_root), negatives=2, near_negatives=0.0, cast_negatives=1.0
    )
    dataset = data.dataset("train")
    texts_to_cast = {
        panel.dialogue: frozenset(c.character for c in panel.characters)
        for panels in dataset.panels
        for _, panel in panels
    }
    for index in range(8):
        item = dataset[index]
        target_cast = texts_to_cast[item["texts"][item["target"]]]
        negative_casts = [texts_to_cast[text] for text in item["negative_texts"]]
        assert target_cast and all(cast != target_cast for cast in negative_casts)
    # without them, near negatives often share the scene and its characters
    plain = ComicsDataModule(root=str(sample_root), negatives=2, near_negatives=1.0).dataset(
        "train"
    )
    same_cast = 0
    for index in range(8):
        item = plain[index]
        target_cast = texts_to_cast[item["texts"][item["target"]]]
        same_cast += sum(texts_to_cast[text] == target_cast for text in item["negative_texts"])
    assert same_cast > 0


def test_swapped_texts_trade_places_and_nothing_else() -> None:
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[5:10, 4:20] = 200  # the first text: a bright block
    pixels[5:15, 30:50] = 90  # the last text: a larger grey block
    pixels[30:, :] = 50  # the scene below
    panel = Panel(
        (100, 100, 160, 140),
        texts=[
            TextBox((104, 105, 120, 110), "Hello, Bo!"),
            TextBox((130, 105, 150, 115), "Hi Ada."),
        ],
    )
    swapped = swap_regions(pixels, panel)
    assert swapped is not None and (swapped[5:10, 4:20] == 90).all()
    assert (swapped[5:15, 30:50] == 200).all()  # resized into the other's box
    outside = np.ones((40, 60), bool)
    outside[5:10, 4:20] = outside[5:15, 30:50] = False
    assert (swapped[outside] == pixels[outside]).all()
    panel.texts[1].text = "Hello, Bo!"  # the same words twice: nothing to swap
    assert swap_regions(pixels, panel) is None


def test_borrowed_texts_fill_every_text_box_and_nothing_else() -> None:
    pixels = np.full((40, 60, 3), 50, np.uint8)
    panel = Panel(
        (0, 0, 60, 40),
        texts=[TextBox((4, 5, 20, 10), "Hello, Bo!"), TextBox((30, 5, 50, 15), "Hi Ada.")],
    )
    donor_pixels = np.zeros((20, 30, 3), np.uint8)
    donor_pixels[2:6, 2:10] = 220  # the donor's only text: a bright block
    donor = Panel((100, 100, 130, 120), texts=[TextBox((102, 102, 110, 106), "Good night.")])
    lettered = letter_as(pixels, panel, donor_pixels, donor)
    # the one donor text fills both boxes (repeated), resized into each; the rest is untouched
    assert lettered is not None
    assert (lettered[5:10, 4:20] == 220).all() and (lettered[5:15, 30:50] == 220).all()
    outside = np.ones((40, 60), bool)
    outside[5:10, 4:20] = outside[5:15, 30:50] = False
    assert (lettered[outside] == 50).all()
    # the same words, or a donor without text, give nothing to letter
    assert letter_as(pixels, panel, pixels, panel) is None
    assert letter_as(pixels, panel, donor_pixels, Panel((100, 100, 130, 120))) is None
