"""What ``domainvlm eval`` needs from a remote-sensing dataset root: labelled and captioned images."""

from __future__ import annotations

from pathlib import Path

from domainvlm.core.registry import RetrievalData, ZeroShotData
from domainvlm.domains.remote_sensing.captions import CaptionDataset
from domainvlm.domains.remote_sensing.data import normalise_class_name
from domainvlm.domains.remote_sensing.knowledge import SCENE_DATASETS, concept_for_label
from domainvlm.domains.remote_sensing.scenes import SceneFolderDataset
from domainvlm.domains.remote_sensing.templates import templates

SCENE_FOLDER = "scene_classes"


def localised_class_name(folder: str, lang: str) -> str:
    """A class folder's name in ``lang``, through the shared concept list (EuroSAT, UCM, AID, ...)."""
    for dataset in SCENE_DATASETS:
        try:
            concept = concept_for_label(dataset, folder)
        except KeyError:
            continue
        if lang in concept.names:
            return concept.names[lang]
    if lang == "en":
        return normalise_class_name(folder)
    raise KeyError(
        f"class folder {folder!r} is not a known remote-sensing concept, so it has no {lang!r} "
        "name; evaluate it in English (--lang en)"
    )


def zeroshot_data(root: Path, split: str = "test", lang: str = "en") -> ZeroShotData:
    """A class-folder scene set: ``root/scene_classes`` (the sample) or ``root`` itself."""
    root = Path(root)
    folder_root = root / SCENE_FOLDER if (root / SCENE_FOLDER).is_dir() else root
    dataset = SceneFolderDataset(folder_root, split)
    return ZeroShotData(
        paths=[path for path, _ in dataset.samples],
        labels=list(dataset.labels),
        classnames=[localised_class_name(folder, lang) for folder in dataset.folder_names],
        templates=templates(lang),
    )


def retrieval_data(root: Path, split: str = "test") -> RetrievalData:
    dataset = CaptionDataset(root, split)
    captions, image_index, languages = [], [], []
    for index in range(len(dataset)):
        for text, lang in dataset.captions(index):
            captions.append(text)
            image_index.append(index)
            languages.append(lang)
    return RetrievalData(list(dataset.paths), captions, image_index, languages)
