"""The remote-sensing semantic knowledge source: scene- and object-level concepts in 10 languages.

``concepts.json`` is written by us. Each concept merges every dataset class that means the same
thing (EuroSAT ``SeaLake`` and RESISC45 ``lake``), so a loader goes from a folder name to one concept
and the knowledge base holds one entry per concept and language.

Level rule: a concept is ``object`` when some detection dataset (DOTA, DIOR, xView, FAIR1M) draws
boxes around it, even if a scene set also has it as a whole-image class (airport, harbor, tennis
court); every other concept is ``scene``. Loading checks this rule.

DOTA means DOTA-v2.0 (18 classes). DOTA-v1.5 is the same list without ``airport`` and ``helipad``;
DOTA-v1.0 is v1.5 without ``container-crane``.

Knowledge-record text is ``"<name>: <description>"`` in the record's language. Descriptions are
written in English; a row in another language uses its own-language description when the JSON has
one and the English one otherwise (multilingual text towers embed mixed text well, and the
localized name keeps the row language-specific). ``description_lang`` says which one was used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

from domainvlm.core.errors import DomainVLMError

LANGUAGES = ("en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru")
LEVELS = ("scene", "object")
SCENE_DATASETS = ("EuroSAT", "UCM", "AID", "RESISC45")
OBJECT_DATASETS = ("DOTA", "DIOR", "xView", "FAIR1M")
DATASETS = SCENE_DATASETS + OBJECT_DATASETS
FULLY_TRANSLATED_DATASETS = SCENE_DATASETS + ("DOTA", "DIOR")
"""Every class of these datasets has a name in all of ``LANGUAGES``; xView and FAIR1M need English."""

CONCEPTS_PATH = Path(__file__).with_name("concepts.json")


class ConceptsFileError(DomainVLMError, ValueError):
    """``concepts.json`` (or a file passed instead) breaks the schema."""


@dataclass(frozen=True)
class Concept:
    id: str
    level: str
    names: Mapping[str, str]
    description: Mapping[str, str]
    labels: Mapping[str, str]
    """Dataset name -> that dataset's original class label (folder name or annotation string)."""

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.labels)


def _label_key(text: str) -> str:
    """Folder names drift in case and separators between copies (``BareLand``, ``bare_land``)."""
    return re.sub(r"[^0-9a-z]", "", text.casefold())


def _parse_concept(raw: object, index: int, path: Path) -> Concept:
    where = f"{path}: concept #{index}"
    if not isinstance(raw, dict):
        raise ConceptsFileError(f"{where} must be an object, got {type(raw).__name__}")
    missing = {"id", "level", "datasets", "names", "description", "labels"} - raw.keys()
    if missing:
        raise ConceptsFileError(f"{where} lacks field(s) {sorted(missing)}")
    concept_id = raw["id"]
    if not isinstance(concept_id, str) or not re.fullmatch(r"[a-z0-9_]+", concept_id):
        raise ConceptsFileError(f"{where}: id {concept_id!r} must be snake_case ascii")
    where = f"{path}: concept {concept_id!r}"
    if raw["level"] not in LEVELS:
        raise ConceptsFileError(
            f"{where}: unknown level {raw['level']!r}, expected one of {LEVELS}"
        )
    for field_name in ("names", "description", "labels"):
        value = raw[field_name]
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in value.items()
        ):
            raise ConceptsFileError(f"{where}: {field_name} must map strings to non-empty strings")
    unknown_langs = (raw["names"].keys() | raw["description"].keys()) - set(LANGUAGES)
    if unknown_langs:
        raise ConceptsFileError(
            f"{where}: unknown language(s) {sorted(unknown_langs)}, expected {LANGUAGES}"
        )
    if "en" not in raw["names"] or "en" not in raw["description"]:
        raise ConceptsFileError(f"{where}: an English name and description are required")
    unknown_sets = raw["labels"].keys() - set(DATASETS)
    if unknown_sets:
        raise ConceptsFileError(f"{where}: unknown dataset(s) {sorted(unknown_sets)}")
    if not raw["labels"]:
        raise ConceptsFileError(f"{where}: labels must name at least one dataset")
    if raw["datasets"] != list(raw["labels"]):
        raise ConceptsFileError(
            f"{where}: datasets {raw['datasets']} must list the keys of labels in the same order"
        )
    needs_all = [name for name in raw["labels"] if name in FULLY_TRANSLATED_DATASETS]
    missing_langs = [lang for lang in LANGUAGES if lang not in raw["names"]]
    if needs_all and missing_langs:
        raise ConceptsFileError(
            f"{where}: a class of {needs_all} needs names in every language; missing {missing_langs}"
        )
    expected_level = "object" if raw["labels"].keys() & set(OBJECT_DATASETS) else "scene"
    if raw["level"] != expected_level:
        raise ConceptsFileError(
            f"{where}: level must be {expected_level!r} (object iff a detection dataset has it)"
        )
    return Concept(
        id=concept_id,
        level=raw["level"],
        names=MappingProxyType(
            {lang: raw["names"][lang] for lang in LANGUAGES if lang in raw["names"]}
        ),
        description=MappingProxyType(dict(raw["description"])),
        labels=MappingProxyType(dict(raw["labels"])),
    )


@lru_cache(maxsize=8)
def _load(path: Path) -> tuple[tuple[Concept, ...], dict[tuple[str, str], Concept]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConceptsFileError(f"{path}: cannot read concepts: {error}") from error
    if not isinstance(raw, list):
        raise ConceptsFileError(f"{path}: top level must be a list of concepts")
    concepts = tuple(_parse_concept(item, index, path) for index, item in enumerate(raw))
    seen_ids: set[str] = set()
    by_label: dict[tuple[str, str], Concept] = {}
    for concept in concepts:
        if concept.id in seen_ids:
            raise ConceptsFileError(f"{path}: duplicate concept id {concept.id!r}")
        seen_ids.add(concept.id)
        for dataset, label in concept.labels.items():
            key = (_label_key(dataset), _label_key(label))
            if key in by_label:
                raise ConceptsFileError(
                    f"{path}: {dataset} label {label!r} is claimed by both "
                    f"{by_label[key].id!r} and {concept.id!r}"
                )
            by_label[key] = concept
    return concepts, by_label


def load_concepts(path: Path | None = None) -> list[Concept]:
    """All concepts, validated; parsed once per path and cached."""
    return list(_load(path or CONCEPTS_PATH)[0])


def _check_dataset(dataset: str) -> str:
    for known in DATASETS:
        if _label_key(known) == _label_key(dataset):
            return known
    raise KeyError(f"unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")


def concept_for_label(dataset: str, label: str, path: Path | None = None) -> Concept:
    """Map a dataset's class label (folder name or annotation string) to its concept.

    Matching ignores case and separators, so ``sea_lake`` finds EuroSAT's ``SeaLake``.
    """
    dataset = _check_dataset(dataset)
    by_label = _load(path or CONCEPTS_PATH)[1]
    concept = by_label.get((_label_key(dataset), _label_key(label)))
    if concept is None:
        known = ", ".join(sorted(class_names(dataset, "en", path)))
        raise KeyError(f"{dataset} has no class {label!r}; its classes are: {known}")
    return concept


def class_names(dataset: str, lang: str = "en", path: Path | None = None) -> dict[str, str]:
    """Original label -> localized concept name, for every class of ``dataset``."""
    dataset = _check_dataset(dataset)
    if lang not in LANGUAGES:
        raise KeyError(f"unknown language {lang!r}; supported: {', '.join(LANGUAGES)}")
    members = [c for c in load_concepts(path) if dataset in c.labels]
    untranslated = sorted(c.labels[dataset] for c in members if lang not in c.names)
    if untranslated:
        raise KeyError(
            f"{dataset} classes without a {lang!r} name: {', '.join(untranslated)}; "
            "use 'en' or add the names to concepts.json"
        )
    return {c.labels[dataset]: c.names[lang] for c in members}


def knowledge_records(languages: Iterable[str] = LANGUAGES, path: Path | None = None) -> list[dict]:
    """One record per (concept, language that concept has a name in), for the knowledge base."""
    languages = tuple(languages)
    unknown = [lang for lang in languages if lang not in LANGUAGES]
    if unknown:
        raise KeyError(f"unknown language(s) {unknown}; supported: {', '.join(LANGUAGES)}")
    records = []
    for concept in load_concepts(path):
        for lang in languages:
            if lang not in concept.names:
                continue
            description_lang = lang if lang in concept.description else "en"
            name = concept.names[lang]
            records.append(
                {
                    "id": f"{concept.id}:{lang}",
                    "text": f"{name}: {concept.description[description_lang]}",
                    "concept": concept.id,
                    "level": concept.level,
                    "lang": lang,
                    "name": name,
                    "description_lang": description_lang,
                    "datasets": list(concept.datasets),
                }
            )
    return records


def knowledge_queries(root: Path | None = None) -> list[dict]:
    """Text queries of the kind users search the concept base with, one per (concept, language):
    the name in one of that language's zero-shot templates ("an aerial photo of harbor."), never
    a stored text (records hold "<name>: <description>"). ``root`` is unused: concepts ship."""
    from domainvlm.domains.remote_sensing.templates import templates  # it imports LANGUAGES

    queries = []
    for number, record in enumerate(knowledge_records()):
        prompts = templates(record["lang"])
        queries.append({"text": prompts[number % len(prompts)].format(record["name"])})
    return queries
