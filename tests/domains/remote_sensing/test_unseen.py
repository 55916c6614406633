"""The unseen concepts: never named in training, described in the captions' own words."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from domainvlm.domains.remote_sensing.evaluation_data import zeroshot_data
from domainvlm.domains.remote_sensing.knowledge import (
    LANGUAGES,
    class_names,
    concept_for_label,
    knowledge_records,
)
from domainvlm.domains.remote_sensing.rasters import read_raster
from domainvlm.domains.remote_sensing.sample import SIZES
from domainvlm.domains.remote_sensing.unseen import UNSEEN_CLASSES, render_unseen

NIR = 3


def unseen_names() -> set[str]:
    return {
        name.casefold()
        for folder in UNSEEN_CLASSES
        for name in concept_for_label("RESISC45", folder).names.values()
    }


def occurs(name: str, text: str) -> bool:
    """As a word where words are spaced (Dutch "eiland" is not in "weiland", pasture); anywhere
    in Chinese and Korean, whose particles attach to the noun."""
    if re.search(r"[\u3000-\u9fff\uac00-\ud7af]", name):
        return name in text
    return re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text) is not None


def training_texts(root: Path) -> list[str]:
    """Every caption, folder name, split list and RSVQA question/answer the training sets hold."""
    karpathy = json.loads((root / "dataset_rsmclip.json").read_text(encoding="utf-8"))
    texts = [s["raw"] for image in karpathy["images"] for s in image["sentences"]]
    texts += [image["scene_class"] for image in karpathy["images"]]
    texts += [p.name for p in (root / "scene_classes").iterdir()]
    texts += [(root / "scene_classes" / f"{s}.txt").read_text() for s in ("train", "val", "test")]
    for path in (root / "rsvqa").glob("LR_split_*_*.json"):
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def test_no_unseen_name_in_any_language_occurs_in_training_text_or_labels(rs_sample):
    texts = [text.casefold() for text in training_texts(rs_sample)]
    leaks = sorted({name for name in unseen_names() for text in texts if occurs(name, text)})
    assert len(unseen_names()) >= 36  # four concepts, ten languages (pt/it share "porto"...)
    assert leaks == []
    assert occurs("eiland", "zee met een eiland") and not occurs("eiland", "weiland")
    assert occurs("섬", "섬이 있는 바다")


def test_unseen_chips_sit_apart_from_every_training_split(rs_sample):
    listed = (rs_sample / "unseen" / "scene_classes" / "test.txt").read_text().split()
    per_class = SIZES["small"][0]
    assert Counter(line.split("/")[0] for line in listed) == dict.fromkeys(
        UNSEEN_CLASSES, per_class
    )
    assert all((rs_sample / "unseen" / "scene_classes" / line).is_file() for line in listed)
    seen_folders = {p.name for p in (rs_sample / "scene_classes").iterdir() if p.is_dir()}
    assert seen_folders.isdisjoint(UNSEEN_CLASSES)


def test_zeroshot_data_reads_the_unseen_classes_in_any_language(rs_sample):
    data = zeroshot_data(rs_sample / "unseen", "test", lang="de")
    assert sorted(data.classnames) == ["Brücke", "Feuchtgebiet", "Hafen", "Insel"]
    assert len(data.paths) == 4 * SIZES["small"][0]
    assert Counter(data.labels) == dict.fromkeys(range(4), SIZES["small"][0])


def test_unseen_descriptions_use_the_seen_class_names_of_their_language():
    seen = {lang: class_names("EuroSAT", lang).values() for lang in LANGUAGES}
    records = [
        r
        for r in knowledge_records()
        if r["concept"] in {concept_for_label("RESISC45", c).id for c in UNSEEN_CLASSES}
    ]
    assert len(records) == 4 * len(LANGUAGES)
    for record in records:
        assert record["description_lang"] == record["lang"]
        description = record["text"].split(": ", 1)[1].casefold()
        used = [name for name in seen[record["lang"]] if name.casefold() in description]
        assert used, record["id"]


@pytest.mark.parametrize("label", UNSEEN_CLASSES)
def test_unseen_chips_show_water_beside_vegetation_or_built_land(label):
    chip = render_unseen(label, np.random.default_rng(3)).astype(float) / 10_000
    water = chip[NIR] < 0.06  # water is dark in NIR; vegetation and roofs are not
    assert 0.03 < water.mean() < 0.9
    if label == "island":
        assert chip[NIR, 32, 32] > 0.2 and water[0, 0]


def test_presence_questions_are_balanced_and_name_unseen_concepts(rs_sample):
    questions = json.loads((rs_sample / "unseen" / "presence.json").read_text())["questions"]
    assert Counter(q["answer"] for q in questions) == {"yes": 80, "no": 80}
    for question in questions:
        own = question["image"].split("/")[0]
        assert (question["answer"] == "yes") == (
            concept_for_label("RESISC45", own).id == question["concept"]
        )
    assert questions[0]["question"] == "Is there a bridge?"
    assert any(q["question"] == "Is there an island?" for q in questions)
    image = read_raster(rs_sample / "unseen" / "scene_classes" / questions[0]["image"])
    assert image.array.shape == (64, 64, 4) and image.crs is not None
