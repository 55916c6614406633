"""Concepts the sample never names in training: the open-vocabulary test of the knowledge base.

Four RESISC45 classes are drawn from parts the seen EuroSAT classes already show, recombined in a
layout no training chip has: ``bridge`` (a highway stripe across a river), ``island`` (a disc of
forest in a sea or lake), ``harbor`` (an industrial area beside a sea or lake holding ships) and
``wetland`` (herbaceous vegetation dotted with pools of water). Their names, in any of the ten
languages, occur in no training caption, folder or question; their knowledge-base entries
(``concepts.json``) describe them with the seen class names the captions do use. The chips go to
``unseen/scene_classes/<class>/`` with a ``test.txt`` list, so no loader of the training splits
reads them, and ``unseen/presence.json`` asks RSVQA-style presence questions about them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from domainvlm.core.files import atomic_open, atomic_write_json
from domainvlm.domains.remote_sensing.knowledge import concept_for_label
from domainvlm.domains.remote_sensing.sample import (
    ASPHALT,
    CHIP,
    OBJECT_REFLECTANCE,
    OBJECT_SIZE,
    PIXEL_METRES,
    REFLECTANCE_SCALE,
    SIGNATURES,
    TREE,
    WATER,
    _blocky_noise,
    _paint,
    _texture,
    _write_geotiff,
)
from rasterio.transform import from_origin

UNSEEN_CLASSES = ("bridge", "island", "harbor", "wetland")
"""RESISC45 folder names; ``concept_for_label("RESISC45", name)`` gives each its concept."""
UNSEEN_FOLDER = "unseen"


def _disc(centre: tuple[float, float], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:CHIP, 0:CHIP]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < radius**2


def render_unseen(label: str, rng: np.random.Generator) -> np.ndarray:
    """A (4, 64, 64) uint16 chip of an unseen class, from seen signatures and textures."""
    image = np.empty((4, CHIP, CHIP))
    yy, xx = np.mgrid[0:CHIP, 0:CHIP]
    if label == "bridge":  # the River texture, then a highway across the river's course
        image[:] = np.asarray(SIGNATURES["River"])[:, None, None]
        state = rng.bit_generator.state
        river_along_x = rng.random() < 0.5  # _texture's first draw picks the river's direction
        rng.bit_generator.state = state
        _texture("River", image, rng)
        across_river = xx if river_along_x else yy
        _paint(image, np.abs(across_river - rng.integers(16, 48)) < 3, ASPHALT)
    elif label == "island":
        image[:] = np.asarray(SIGNATURES["SeaLake"])[:, None, None]
        image *= 1 + 0.05 * _blocky_noise(rng, 8)
        land = _disc(tuple(rng.uniform(26, 38, size=2)), rng.uniform(12, 18))
        image[:, land] = np.asarray(TREE)[:, None] * (1 + 0.25 * _blocky_noise(rng, 4)[land])
    elif label == "harbor":  # industrial blocks on one half, water with ships on the other
        image[:] = np.asarray(SIGNATURES["Industrial"])[:, None, None]
        _texture("Industrial", image, rng)
        along = xx if rng.random() < 0.5 else yy
        water = along >= CHIP // 2 if rng.random() < 0.5 else along < CHIP // 2
        _paint(image, water, SIGNATURES["SeaLake"])
        ys, xs = np.nonzero(water[: CHIP - OBJECT_SIZE, : CHIP - OBJECT_SIZE])
        for pick in rng.choice(len(ys), size=int(rng.integers(2, 6)), replace=False):
            y, x = ys[pick], xs[pick]
            image[:, y : y + OBJECT_SIZE, x : x + OBJECT_SIZE] = np.asarray(
                OBJECT_REFLECTANCE["ship"]
            )[:, None, None]
    elif label == "wetland":
        image[:] = np.asarray(SIGNATURES["HerbaceousVegetation"])[:, None, None]
        image *= 1 + 0.12 * _blocky_noise(rng, 8)
        for _ in range(int(rng.integers(4, 8))):
            _paint(image, _disc(tuple(rng.uniform(4, 60, size=2)), rng.uniform(3, 7)), WATER)
    else:
        raise KeyError(f"unknown unseen class {label!r}; choose one of {UNSEEN_CLASSES}")
    image *= rng.uniform(0.9, 1.1)
    image += rng.normal(0, 0.004, size=image.shape)
    return np.clip(np.round(image * REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)


def presence_questions(
    label: str, rng: np.random.Generator, lang: str = "en"
) -> list[tuple[str, str, str]]:
    """(concept id, question, answer): one "yes" about the chip's class and one "no" about
    another unseen class, so always answering "yes" scores 50 %."""
    other = str(rng.choice([c for c in UNSEEN_CLASSES if c != label]))
    asked = []
    for folder, answer in ((label, "yes"), (other, "no")):
        concept = concept_for_label("RESISC45", folder)
        asked.append((concept.id, _presence_question(concept.names[lang]), answer))
    return asked


def _presence_question(name: str) -> str:
    return f"Is there {'an' if name[0] in 'aeiou' else 'a'} {name}?"


def write_unseen(out: Path, chips_per_class: int, seed: int) -> None:
    """Chips of every unseen class under ``out/unseen``, from their own random stream, so the
    seen sample's files do not depend on them."""
    rng = np.random.default_rng([seed, 1])
    root = out / UNSEEN_FOLDER
    listing, questions = [], []
    for row, label in enumerate(UNSEEN_CLASSES):
        for number in range(1, chips_per_class + 1):
            relative = f"{label}/{label}_{number}.tif"
            origin = from_origin(
                900_000 + CHIP * PIXEL_METRES * number,
                5_420_000 - CHIP * PIXEL_METRES * row,
                PIXEL_METRES,
                PIXEL_METRES,
            )
            chip = render_unseen(label, rng)
            _write_geotiff(root / "scene_classes" / relative, chip, origin, tiled=False)
            listing.append(relative)
            for concept, question, answer in presence_questions(label, rng):
                questions.append(
                    {"image": relative, "concept": concept, "question": question, "answer": answer}
                )
    with atomic_open(root / "scene_classes" / "test.txt", "w", encoding="utf-8") as handle:
        handle.write("\n".join(listing) + "\n")
    atomic_write_json(root / "presence.json", {"questions": questions})
