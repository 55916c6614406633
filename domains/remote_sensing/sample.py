"""The offline remote-sensing sample: synthetic, but in the real datasets' formats and learnable.

Large georeferenced 4-band scenes are a grid of 64-px land-cover cells (the ten EuroSAT classes,
each with its own colour, texture and near-infrared signature: vegetation bright in NIR, water
dark), each cell holding 0-5 small bright buildings or ships grouped in one region. Chips cut
from the scenes carry the same ground truth into Karpathy captions in ten languages, a class-folder
scene set and RSVQA questions, so a short training run can learn class, count and position.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
from domainvlm.core.files import atomic_open, atomic_write_json
from domainvlm.domains.remote_sensing.knowledge import LANGUAGES, class_names
from rasterio.transform import from_origin
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

CLASSES = (
    "AnnualCrop",
    "Forest",
    "HerbaceousVegetation",
    "Highway",
    "Industrial",
    "Pasture",
    "PermanentCrop",
    "Residential",
    "River",
    "SeaLake",
)
"""EuroSAT's folder names, used as-is for the class-folder set."""
BANDS = ("B2 blue", "B3 green", "B4 red", "B8 nir")
CHIP = 64
BORDER = 16
NODATA = 0
CRS = "EPSG:32631"
PIXEL_METRES = 10.0
REFLECTANCE_SCALE = 10_000
"""Sentinel-2 L2A convention: uint16 digital number = reflectance x 10000."""
SIZES = {"small": (20, 2), "demo": (80, 4)}
"""size -> (chips per class, scenes)."""
SPLIT_FRACTIONS = {"val": 0.15, "test": 0.15}
ROWS_PER_SCENE = 10

SIGNATURES = {
    "AnnualCrop": (0.06, 0.09, 0.11, 0.32),
    "Forest": (0.02, 0.04, 0.02, 0.30),
    "HerbaceousVegetation": (0.04, 0.07, 0.06, 0.26),
    "Highway": (0.05, 0.08, 0.07, 0.24),
    "Industrial": (0.13, 0.13, 0.14, 0.20),
    "Pasture": (0.05, 0.10, 0.07, 0.38),
    "PermanentCrop": (0.07, 0.08, 0.10, 0.22),
    "Residential": (0.08, 0.09, 0.10, 0.18),
    "River": (0.04, 0.07, 0.05, 0.28),
    "SeaLake": (0.07, 0.05, 0.03, 0.01),
}
"""Mean (blue, green, red, NIR) reflectance of each class's background."""
SOIL = (0.08, 0.10, 0.13, 0.20)
TREE = (0.02, 0.05, 0.03, 0.35)
ASPHALT = (0.11, 0.11, 0.12, 0.14)
ROOF = (0.06, 0.07, 0.14, 0.20)
WATER = (0.05, 0.05, 0.03, 0.02)
OBJECT_REFLECTANCE = {"building": (0.32, 0.30, 0.30, 0.28), "ship": (0.38, 0.38, 0.38, 0.25)}
OBJECT_SIZE = 4
SLOT_PITCH = 7
REGIONS = ("upper left", "upper right", "lower left", "lower right", "centre")
REGION_ORIGINS = {
    "upper left": (3, 3),
    "upper right": (3, 43),
    "lower left": (43, 3),
    "lower right": (43, 43),
    "centre": (23, 23),
}
"""Top-left pixel of each region's 3x3 grid of object slots; the five grids never overlap."""


PHRASES: dict[str, dict[str, str]] = {
    "en": {
        "building": "buildings|one building|two buildings|three buildings|four buildings"
        "|five buildings",
        "ship": "ships|one ship|two ships|three ships|four ships|five ships",
        "regions": "in the upper left|in the upper right|in the lower left|in the lower right"
        "|in the centre",
        "with": "An aerial image of {scene} with {objects} {where}."
        "|A satellite photo of {scene} showing {objects} {where}.",
        "without": "An aerial image of {scene} with no {none}."
        "|A satellite photo of {scene} showing no {none}.",
    },
    "pt": {
        "building": "edifícios|um edifício|dois edifícios|três edifícios|quatro edifícios"
        "|cinco edifícios",
        "ship": "navios|um navio|dois navios|três navios|quatro navios|cinco navios",
        "regions": "no canto superior esquerdo|no canto superior direito"
        "|no canto inferior esquerdo|no canto inferior direito|no centro",
        "with": "Uma imagem aérea de {scene} com {objects} {where}."
        "|Foto de satélite de {scene}, com {objects} {where}.",
        "without": "Uma imagem aérea de {scene} sem {none}.|Foto de satélite de {scene}, sem {none}.",
    },
    "es": {
        "building": "edificios|un edificio|dos edificios|tres edificios|cuatro edificios"
        "|cinco edificios",
        "ship": "barcos|un barco|dos barcos|tres barcos|cuatro barcos|cinco barcos",
        "regions": "en la esquina superior izquierda|en la esquina superior derecha"
        "|en la esquina inferior izquierda|en la esquina inferior derecha|en el centro",
        "with": "Una imagen aérea de {scene} con {objects} {where}."
        "|Foto de satélite de {scene}, con {objects} {where}.",
        "without": "Una imagen aérea de {scene} sin {none}.|Foto de satélite de {scene}, sin {none}.",
    },
    "fr": {
        "building": "bâtiment|un bâtiment|deux bâtiments|trois bâtiments|quatre bâtiments"
        "|cinq bâtiments",
        "ship": "navire|un navire|deux navires|trois navires|quatre navires|cinq navires",
        "regions": "en haut à gauche|en haut à droite|en bas à gauche|en bas à droite|au centre",
        "with": "Image aérienne : {scene}, avec {objects} {where}."
        "|Photo satellite : {scene}, avec {objects} {where}.",
        "without": "Image aérienne : {scene}, sans aucun {none}."
        "|Photo satellite : {scene}, sans aucun {none}.",
    },
    "de": {
        "building": "Gebäude|einem Gebäude|zwei Gebäuden|drei Gebäuden|vier Gebäuden|fünf Gebäuden",
        "ship": "Schiffe|einem Schiff|zwei Schiffen|drei Schiffen|vier Schiffen|fünf Schiffen",
        "regions": "oben links|oben rechts|unten links|unten rechts|in der Mitte",
        "with": "Luftbild: {scene} mit {objects} {where}."
        "|Satellitenaufnahme: {scene}, mit {objects} {where}.",
        "without": "Luftbild: {scene} ohne {none}.|Satellitenaufnahme: {scene}, ohne {none}.",
    },
    "nl": {
        "building": "gebouwen|één gebouw|twee gebouwen|drie gebouwen|vier gebouwen|vijf gebouwen",
        "ship": "schepen|één schip|twee schepen|drie schepen|vier schepen|vijf schepen",
        "regions": "linksboven|rechtsboven|linksonder|rechtsonder|in het midden",
        "with": "Luchtfoto van {scene} met {objects} {where}."
        "|Satellietbeeld: {scene}, met {objects} {where}.",
        "without": "Luchtfoto van {scene} zonder {none}.|Satellietbeeld: {scene}, zonder {none}.",
    },
    "it": {
        "building": "edifici|un edificio|due edifici|tre edifici|quattro edifici|cinque edifici",
        "ship": "navi|una nave|due navi|tre navi|quattro navi|cinque navi",
        "regions": "in alto a sinistra|in alto a destra|in basso a sinistra|in basso a destra"
        "|al centro",
        "with": "Immagine aerea di {scene} con {objects} {where}."
        "|Foto satellitare: {scene}, con {objects} {where}.",
        "without": "Immagine aerea di {scene} senza {none}.|Foto satellitare: {scene}, senza {none}.",
    },
    "zh": {
        "building": "建筑|一座建筑|两座建筑|三座建筑|四座建筑|五座建筑",
        "ship": "船只|一艘船|两艘船|三艘船|四艘船|五艘船",
        "regions": "左上方|右上方|左下方|右下方|中央",
        "with": "{scene}的航拍图像，{where}有{objects}。|这张卫星图像显示了{scene}，{where}有{objects}。",
        "without": "{scene}的航拍图像，没有{none}。|这张卫星图像显示了{scene}，没有{none}。",
    },
    "ko": {
        "building": "건물|건물 한 채가|건물 두 채가|건물 세 채가|건물 네 채가|건물 다섯 채가",
        "ship": "배|배 한 척이|배 두 척이|배 세 척이|배 네 척이|배 다섯 척이",
        "regions": "왼쪽 위에|오른쪽 위에|왼쪽 아래에|오른쪽 아래에|가운데에",
        "with": "{where} {objects} 있는 {scene} 항공 사진.|{scene} 위성 영상: {where} {objects} 있다.",
        "without": "{none} 없는 {scene} 항공 사진.|{scene} 위성 영상: {none} 없음.",
    },
    "ru": {
        "building": "зданий|одним зданием|двумя зданиями|тремя зданиями|четырьмя зданиями"
        "|пятью зданиями",
        "ship": "кораблей|одним кораблём|двумя кораблями|тремя кораблями|четырьмя кораблями"
        "|пятью кораблями",
        "regions": "в левом верхнем углу|в правом верхнем углу|в левом нижнем углу"
        "|в правом нижнем углу|в центре",
        "with": "{scene} на аэроснимке, с {objects} {where}."
        "|Спутниковый снимок: {scene}, с {objects} {where}.",
        "without": "{scene} на аэроснимке, без {none}.|Спутниковый снимок: {scene}, без {none}.",
    },
}
"""Per language, "|"-separated: for each object kind the noun after "without" then the phrases
for 1..5 objects (already in the case the templates need: German dative, Russian instrumental,
Korean with its subject particle); the five regions in ``REGIONS`` order; two sentence templates
with objects and two without."""


@dataclass(frozen=True)
class ChipTruth:
    """What is in one chip: the single source of captions, folders and VQA answers."""

    label: str
    kind: str
    count: int
    region: str
    scene: int
    row: int
    col: int
    split: str = ""

    @property
    def name(self) -> str:
        return f"scene{self.scene}_r{self.row:02d}_c{self.col:02d}.tif"


def caption(truth: ChipTruth, lang: str, variant: int) -> str:
    """One sentence about ``truth`` in ``lang``; class names come from the knowledge base."""
    phrases = {key: value.split("|") for key, value in PHRASES[lang].items()}
    scene = class_names("EuroSAT", lang)[truth.label]
    forms = phrases[truth.kind]
    if truth.count == 0:
        templates = phrases["without"]
        text = templates[variant % len(templates)].format(scene=scene, none=forms[0])
    else:
        templates = phrases["with"]
        where = phrases["regions"][REGIONS.index(truth.region)]
        text = templates[variant % len(templates)].format(
            scene=scene, objects=forms[truth.count], where=where
        )
    return text[0].upper() + text[1:]


# -- rendering -------------------------------------------------------------------------------------


def _blocky_noise(rng: np.random.Generator, cell: int) -> np.ndarray:
    coarse = rng.normal(size=(CHIP // cell, CHIP // cell))
    return np.kron(coarse, np.ones((cell, cell)))


def _paint(image: np.ndarray, where: np.ndarray, reflectance: tuple[float, ...]) -> None:
    image[:, where] = np.asarray(reflectance)[:, None]


def _texture(label: str, image: np.ndarray, rng: np.random.Generator) -> None:
    """Class-specific structure on top of the flat background signature (in place)."""
    yy, xx = np.mgrid[0:CHIP, 0:CHIP]
    along = xx if rng.random() < 0.5 else yy
    across = yy if along is xx else xx
    if label == "AnnualCrop":
        _paint(image, (along // int(rng.integers(6, 12))) % 2 == 1, SOIL)
    elif label == "Forest":
        image *= 1 + 0.25 * _blocky_noise(rng, 4)
    elif label in ("HerbaceousVegetation", "Pasture"):
        image *= 1 + (0.12 if label == "HerbaceousVegetation" else 0.04) * _blocky_noise(rng, 8)
    elif label == "Highway":
        centre = rng.integers(16, 48)
        _paint(image, np.abs(across - centre) < 3, ASPHALT)
    elif label == "Industrial":
        for _ in range(int(rng.integers(3, 6))):
            top, left = rng.integers(0, CHIP - 16, size=2)
            height, width = rng.integers(10, 24, size=2)
            grey = rng.uniform(0.12, 0.22)
            block = np.asarray([grey, grey, grey * 1.05, 0.18])[:, None, None]
            image[:, top : top + height, left : left + width] = block
    elif label == "PermanentCrop":
        _paint(image, (yy % 6 < 3) & (xx % 6 < 3), TREE)
    elif label == "Residential":
        _paint(image, (yy % 12 >= 2) & (yy % 12 < 5) & (xx % 12 >= 2) & (xx % 12 < 5), ROOF)
        _paint(image, (yy % 12 == 0) | (xx % 12 == 0), ASPHALT)
    elif label == "River":
        phase = rng.uniform(0, 2 * np.pi)
        course = 32 + 10 * np.sin(along / 10 + phase)
        _paint(image, np.abs(across - course) < rng.integers(4, 7), WATER)
    elif label == "SeaLake":
        image *= 1 + 0.05 * _blocky_noise(rng, 8)


def render_chip(truth: ChipTruth, rng: np.random.Generator) -> np.ndarray:
    """A (4, 64, 64) uint16 chip: background, texture, objects, sensor noise."""
    image = np.empty((len(BANDS), CHIP, CHIP))
    image[:] = np.asarray(SIGNATURES[truth.label])[:, None, None]
    _texture(truth.label, image, rng)
    image *= rng.uniform(0.9, 1.1)
    top, left = REGION_ORIGINS[truth.region]
    slots = rng.choice(9, size=truth.count, replace=False)
    for slot in slots:
        y = top + SLOT_PITCH * (slot // 3)
        x = left + SLOT_PITCH * (slot % 3)
        image[:, y : y + OBJECT_SIZE, x : x + OBJECT_SIZE] = np.asarray(
            OBJECT_REFLECTANCE[truth.kind]
        )[:, None, None]
    image += rng.normal(0, 0.004, size=image.shape)
    return np.clip(np.round(image * REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)


def _plan(chips_per_class: int, scenes: int, rng: np.random.Generator) -> list[ChipTruth]:
    """Ground truth for every cell, classes balanced and shuffled, splits stratified by class."""
    labels = rng.permutation(np.repeat(np.array(CLASSES), chips_per_class))
    cols = len(labels) // (scenes * ROWS_PER_SCENE)
    truths = []
    for index, label in enumerate(labels):
        scene, cell = divmod(index, ROWS_PER_SCENE * cols)
        truths.append(
            ChipTruth(
                label=str(label),
                kind="ship" if label == "SeaLake" else "building",
                count=int(rng.integers(0, 6)),
                region=str(rng.choice(REGIONS)),
                scene=scene,
                row=cell // cols,
                col=cell % cols,
            )
        )
    splits: dict[int, str] = {}
    for label in CLASSES:
        members = [i for i, t in enumerate(truths) if t.label == label]
        order = rng.permutation(members)
        n_val = round(SPLIT_FRACTIONS["val"] * len(members))
        n_test = round(SPLIT_FRACTIONS["test"] * len(members))
        for rank, index in enumerate(order):
            splits[int(index)] = (
                "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
            )
    return [replace(truth, split=splits[i]) for i, truth in enumerate(truths)]


# -- writing ---------------------------------------------------------------------------------------


def _write_geotiff(path: Path, array: np.ndarray, transform: rasterio.Affine, tiled: bool) -> None:
    """Write beside ``path`` and rename, so a crash never leaves a truncated GeoTIFF behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tif")
    os.close(fd)
    profile = dict(
        driver="GTiff",
        width=array.shape[2],
        height=array.shape[1],
        count=array.shape[0],
        dtype=array.dtype.name,
        crs=CRS,
        transform=transform,
        nodata=NODATA,
        compress="deflate",
        predictor=2,
    )
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)
            dst.descriptions = BANDS
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _link(source: Path, target: Path) -> None:
    """The same chip appears in three dataset layouts: hard-link it (copy where links fail)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _write_scenes_and_chips(
    out: Path, truths: list[ChipTruth], scenes: int, rng: np.random.Generator
) -> None:
    """Each scene is rendered cell by cell; each chip is its cell cut out, with its own transform."""
    cols = max(t.col for t in truths) + 1
    height, width = 2 * BORDER + ROWS_PER_SCENE * CHIP, 2 * BORDER + cols * CHIP
    for scene in range(scenes):
        members = [t for t in truths if t.scene == scene]
        array = np.full((len(BANDS), height, width), NODATA, dtype=np.uint16)
        for truth in members:
            y, x = BORDER + truth.row * CHIP, BORDER + truth.col * CHIP
            array[:, y : y + CHIP, x : x + CHIP] = render_chip(truth, rng)
        origin = from_origin(440_000 + 20_000 * scene, 5_420_000, PIXEL_METRES, PIXEL_METRES)
        _write_geotiff(out / "scenes" / f"scene{scene}.tif", array, origin, tiled=True)
        for truth in members:
            window = Window(BORDER + truth.col * CHIP, BORDER + truth.row * CHIP, CHIP, CHIP)
            chip = array[:, window.toslices()[0], window.toslices()[1]]
            _write_geotiff(
                out / "images" / truth.name, chip, window_transform(window, origin), tiled=False
            )


def _karpathy(truths: list[ChipTruth]) -> dict:
    """Five sentences per image; within each split, languages rotate so every one appears."""
    images, sentence_id, position = [], 0, {"train": 0, "val": 0, "test": 0}
    for image_id, truth in enumerate(truths):
        sentences = []
        for k in range(5):
            lang = LANGUAGES[(position[truth.split] * 5 + k) % len(LANGUAGES)]
            text = caption(truth, lang, variant=image_id + k)
            tokens = text.lower().rstrip(".。").replace(",", " ").replace("，", " ").split()
            sentences.append(
                {
                    "raw": text,
                    "tokens": tokens,
                    "lang": lang,
                    "imgid": image_id,
                    "sentid": sentence_id,
                }
            )
            sentence_id += 1
        position[truth.split] += 1
        images.append(
            {
                "filename": truth.name,
                "imgid": image_id,
                "split": truth.split,
                "sentences": sentences,
                "sentids": [s["sentid"] for s in sentences],
                "scene_class": truth.label,
                "objects": {"kind": truth.kind, "count": truth.count, "region": truth.region},
            }
        )
    return {"dataset": "rsmclip-synthetic", "images": images}


def _write_scene_classes(out: Path, truths: list[ChipTruth]) -> None:
    listing: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    numbers = dict.fromkeys(CLASSES, 0)
    for truth in truths:
        numbers[truth.label] += 1
        relative = f"{truth.label}/{truth.label}_{numbers[truth.label]}.tif"
        _link(out / "images" / truth.name, out / "scene_classes" / relative)
        listing[truth.split].append(relative)
    for split, lines in listing.items():
        with atomic_open(out / "scene_classes" / f"{split}.txt", "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")


def vqa_questions(truth: ChipTruth, asked_region: str) -> list[tuple[str, str, str]]:
    """(type, question, answer) in RSVQA-LR's four types, answered from the chip's ground truth."""
    buildings = truth.count if truth.kind == "building" else 0
    ships = truth.count if truth.kind == "ship" else 0
    in_region = truth.count > 0 and truth.region == asked_region
    urban = truth.label in ("Residential", "Industrial")
    return [
        ("presence", "Is there a building?", _yes(buildings > 0)),
        ("presence", "Is there water?", _yes(truth.label in ("River", "SeaLake"))),
        ("count", f"How many {truth.kind}s are there?", str(truth.count)),
        ("presence", f"Is there a {truth.kind} in the {asked_region}?", _yes(in_region)),
        ("comp", "Are there more buildings than ships?", _yes(buildings > ships)),
        ("rural_urban", "Is it a rural or an urban area?", "urban" if urban else "rural"),
    ]


def _yes(condition: bool) -> str:
    return "yes" if condition else "no"


def _write_rsvqa(out: Path, truths: list[ChipTruth], rng: np.random.Generator) -> None:
    """RSVQA-LR files; question ids double as answer ids, as each question has one answer."""
    root = out / "rsvqa"
    next_id = 0
    for split in ("train", "val", "test"):
        questions, answers, images = [], [], []
        for image_id, truth in enumerate(truths):
            if truth.split != split:
                continue
            _link(out / "images" / truth.name, root / "Images_LR" / f"{image_id}.tif")
            ids = []
            for kind, question, answer in vqa_questions(truth, str(rng.choice(REGIONS))):
                questions.append(
                    {
                        "id": next_id,
                        "img_id": image_id,
                        "type": kind,
                        "question": question,
                        "answers_ids": [next_id],
                        "active": True,
                    }
                )
                answers.append(
                    {"id": next_id, "question_id": next_id, "answer": answer, "active": True}
                )
                ids.append(next_id)
                next_id += 1
            images.append({"id": image_id, "questions_ids": ids, "active": True})
        for kind, entries in (("questions", questions), ("answers", answers), ("images", images)):
            atomic_write_json(root / f"LR_split_{split}_{kind}.json", {kind: entries})


README = """Synthetic remote-sensing sample data written by `domainvlm sample-data remote_sensing`.

None of these images shows a real place: every pixel was generated. They only follow the formats
of the real datasets so the same loaders read both, and they carry learnable structure:
- scenes/        large 4-band GeoTIFFs (B2 blue, B3 green, B4 red, B8 NIR; uint16 reflectance x 10000;
                 {crs}, 10 m pixels, tiled, nodata=0 border) made of 64-px land-cover cells
- images/        64-px chips cut from the scenes, one per cell, georeferenced
- dataset_rsmclip.json  Karpathy-style captions, splits train/val/test, 5 sentences per image in
                 10 languages (en pt es fr de nl it zh ko ru), each sentence with its "lang"
- scene_classes/ EuroSAT-style class folders + train/val/test.txt split lists
- rsvqa/         RSVQA-LR layout: LR_split_<split>_{{questions,answers,images}}.json + Images_LR/
- unseen/        classes no training caption, folder or question names (bridge, island, harbor,
                 wetland), for open-vocabulary tests: scene_classes/<class>/ + test.txt, and
                 presence.json (yes/no questions about them)
The test split is held out everywhere: the same chips are test chips in every set.
Seed {seed}, size {size}: {chips} chips, {per_class} per class.
"""


def write_sample(out_dir: Path, size: str = "small", seed: int = 0) -> Path:
    """Write the sample dataset under ``out_dir``; the same (size, seed) gives the same files."""
    if size not in SIZES:
        raise ValueError(f"unknown sample size {size!r}; choose one of {sorted(SIZES)}")
    out = Path(out_dir)
    chips_per_class, scenes = SIZES[size]
    rng = np.random.default_rng(seed)
    truths = _plan(chips_per_class, scenes, rng)
    _write_scenes_and_chips(out, truths, scenes, rng)
    atomic_write_json(out / "dataset_rsmclip.json", _karpathy(truths))
    _write_scene_classes(out, truths)
    _write_rsvqa(out, truths, rng)
    from domainvlm.domains.remote_sensing.unseen import write_unseen  # it imports this module

    write_unseen(out, chips_per_class, seed)
    readme = README.format(
        crs=CRS, seed=seed, size=size, chips=len(truths), per_class=chips_per_class
    )
    with atomic_open(out / "README.txt", "w", encoding="utf-8") as handle:
        handle.write(readme)
    return out
