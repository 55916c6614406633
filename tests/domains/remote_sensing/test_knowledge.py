import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.domains.remote_sensing.knowledge import (
    DATASETS,
    LANGUAGES,
    OBJECT_DATASETS,
    ConceptsFileError,
    class_names,
    concept_for_label,
    knowledge_queries,
    knowledge_records,
    load_concepts,
)

# The class labels exactly as the public releases spell them (folder names or annotation strings).
OFFICIAL_LABELS = {
    "EuroSAT": "AnnualCrop Forest HerbaceousVegetation Highway Industrial Pasture PermanentCrop "
    "Residential River SeaLake",
    "UCM": "agricultural airplane baseballdiamond beach buildings chaparral denseresidential forest "
    "freeway golfcourse harbor intersection mediumresidential mobilehomepark overpass parkinglot "
    "river runway sparseresidential storagetanks tenniscourt",
    "AID": "Airport BareLand BaseballField Beach Bridge Center Church Commercial DenseResidential "
    "Desert Farmland Forest Industrial Meadow MediumResidential Mountain Park Parking Playground "
    "Pond Port RailwayStation Resort River School SparseResidential Square Stadium StorageTanks "
    "Viaduct",
    "RESISC45": "airplane airport baseball_diamond basketball_court beach bridge chaparral church "
    "circular_farmland cloud commercial_area dense_residential desert forest freeway golf_course "
    "ground_track_field harbor industrial_area intersection island lake meadow medium_residential "
    "mobile_home_park mountain overpass palace parking_lot railway railway_station "
    "rectangular_farmland river roundabout runway sea_ice ship snowberg sparse_residential stadium "
    "storage_tank tennis_court terrace thermal_power_station wetland",
    "DOTA": "plane ship storage-tank baseball-diamond tennis-court basketball-court "
    "ground-track-field harbor bridge large-vehicle small-vehicle helicopter roundabout "
    "soccer-ball-field swimming-pool container-crane airport helipad",
    "DIOR": "airplane airport baseballfield basketballcourt bridge chimney dam "
    "Expressway-Service-area Expressway-toll-station golffield groundtrackfield harbor overpass "
    "ship stadium storagetank tenniscourt trainstation vehicle windmill",
    # Labels with spaces: these two lists are separated by "|".
    "xView": "Fixed-wing Aircraft|Small Aircraft|Cargo Plane|Helicopter|Passenger Vehicle|"
    "Small Car|Bus|Pickup Truck|Utility Truck|Truck|Cargo Truck|Truck w/Box|Truck Tractor|Trailer|"
    "Truck w/Flatbed|Truck w/Liquid|Crane Truck|Railway Vehicle|Passenger Car|Cargo Car|Flat Car|"
    "Tank car|Locomotive|Maritime Vessel|Motorboat|Sailboat|Tugboat|Barge|Fishing Vessel|Ferry|"
    "Yacht|Container Ship|Oil Tanker|Engineering Vehicle|Tower crane|Container Crane|"
    "Reach Stacker|Straddle Carrier|Mobile Crane|Dump Truck|Haul Truck|Scraper/Tractor|"
    "Front loader/Bulldozer|Excavator|Cement Mixer|Ground Grader|Hut/Tent|Shed|Building|"
    "Aircraft Hangar|Damaged Building|Facility|Construction Site|Vehicle Lot|Helipad|Storage Tank|"
    "Shipping container lot|Shipping Container|Pylon|Tower",
    "FAIR1M": "Boeing737|Boeing747|Boeing777|Boeing787|C919|A220|A321|A330|A350|ARJ21|"
    "other-airplane|Passenger Ship|Motorboat|Fishing Boat|Tugboat|Engineering Ship|"
    "Liquid Cargo Ship|Dry Cargo Ship|Warship|other-ship|Small Car|Bus|Cargo Truck|Dump Truck|Van|"
    "Trailer|Tractor|Excavator|Truck Tractor|other-vehicle|Basketball Court|Tennis Court|"
    "Football Field|Baseball Field|Intersection|Roundabout|Bridge",
}
OFFICIAL = {
    name: labels.split("|") if "|" in labels else labels.split()
    for name, labels in OFFICIAL_LABELS.items()
}
OFFICIAL_COUNTS = {
    "EuroSAT": 10, "UCM": 21, "AID": 30, "RESISC45": 45,
    "DOTA": 18, "DIOR": 20, "xView": 60, "FAIR1M": 37,
}  # fmt: skip


def test_languages_are_the_ten_of_rs_m_clip() -> None:
    assert LANGUAGES == ("en", "pt", "es", "fr", "de", "nl", "it", "zh", "ko", "ru")


@pytest.mark.parametrize("dataset", DATASETS)
def test_class_labels_equal_the_official_list(dataset: str) -> None:
    labels = list(class_names(dataset, "en"))
    assert len(labels) == OFFICIAL_COUNTS[dataset] == len(OFFICIAL[dataset])
    assert sorted(labels) == sorted(OFFICIAL[dataset])


def test_concept_ids_are_unique_and_levels_follow_the_rule() -> None:
    concepts = load_concepts()
    duplicates = [cid for cid, n in Counter(c.id for c in concepts).items() if n > 1]
    assert duplicates == []
    for concept in concepts:
        boxed = any(dataset in OBJECT_DATASETS for dataset in concept.datasets)
        assert concept.level == ("object" if boxed else "scene"), concept.id
        assert concept.description["en"].endswith(".")


def test_every_scene_and_dota_dior_concept_is_named_in_all_languages() -> None:
    concepts = load_concepts()
    scene = [c for c in concepts if c.level == "scene"]
    dota_dior = [c for c in concepts if {"DOTA", "DIOR"} & set(c.datasets)]
    # DOTA 18 + DIOR 20 classes share 10 concepts (airplane, airport, harbor, ship, ...).
    assert len(scene) == 43 and len(dota_dior) == 28
    for concept in scene + dota_dior:
        assert tuple(concept.names) == LANGUAGES, concept.id
        assert all(name.strip() == name and name for name in concept.names.values())


def test_xview_and_fair1m_concepts_are_named_in_english() -> None:
    for concept in load_concepts():
        if {"xView", "FAIR1M"} & set(concept.datasets):
            assert concept.names["en"], concept.id


@pytest.mark.parametrize("dataset", DATASETS)
def test_localized_names_tell_every_class_of_a_dataset_apart(dataset: str) -> None:
    for lang in LANGUAGES:
        names = list(class_names(dataset, lang).values())
        assert len(set(names)) == len(names), (dataset, lang)


def test_duplicates_across_datasets_are_merged_into_one_concept() -> None:
    assert concept_for_label("EuroSAT", "SeaLake") is concept_for_label("RESISC45", "lake")
    harbor = concept_for_label("AID", "Port")
    assert harbor.id == "harbor"
    assert harbor is concept_for_label("DOTA", "harbor") is concept_for_label("UCM", "harbor")
    airplane = concept_for_label("UCM", "airplane")
    assert (airplane.id, airplane.level) == ("airplane", "object")
    assert airplane is concept_for_label("DOTA", "plane") is concept_for_label("DIOR", "airplane")
    assert concept_for_label("FAIR1M", "Football Field").id == "soccer_field"
    assert concept_for_label("DIOR", "trainstation").id == "railway_station"
    assert concept_for_label("RESISC45", "freeway").id == "highway"
    forest = concept_for_label("EuroSAT", "Forest")
    assert forest.level == "scene"
    assert dict(forest.labels) == {
        "EuroSAT": "Forest", "UCM": "forest", "AID": "Forest", "RESISC45": "forest",
    }  # fmt: skip


def test_label_lookup_ignores_case_and_separators() -> None:
    assert concept_for_label("eurosat", "sea_lake").id == "sea_lake"
    assert concept_for_label("AID", "bare_land").id == "bare_land"
    assert concept_for_label("DOTA", "Storage Tank").id == "storage_tank"


def test_unknown_labels_and_datasets_get_clear_errors() -> None:
    with pytest.raises(KeyError, match="EuroSAT has no class 'Glacier'.*SeaLake"):
        concept_for_label("EuroSAT", "Glacier")
    with pytest.raises(KeyError, match="unknown dataset 'MNIST'.*RESISC45"):
        class_names("MNIST")
    with pytest.raises(KeyError, match="unknown language 'ja'.*en, pt"):
        class_names("EuroSAT", "ja")


def test_class_names_are_localized() -> None:
    german = class_names("EuroSAT", "de")
    assert german["SeaLake"] == "Meer oder See"
    assert german["Forest"] == "Wald"
    assert class_names("RESISC45", "zh")["lake"] == "海洋或湖泊"
    assert class_names("DIOR", "ru")["windmill"] == "ветряная турбина"
    assert class_names("UCM", "en")["denseresidential"] == "dense residential area"


def test_load_concepts_is_cached_and_immutable() -> None:
    first, second = load_concepts(), load_concepts()
    assert first == second and all(a is b for a, b in zip(first, second))
    first.clear()
    assert len(load_concepts()) == len(second)
    with pytest.raises(TypeError):
        second[0].names["en"] = "changed"  # type: ignore[index]


def test_records_are_one_per_concept_and_named_language() -> None:
    concepts = load_concepts()
    records = knowledge_records()
    assert len(records) == sum(len(c.names) for c in concepts)
    assert len({r["id"] for r in records}) == len(records)
    sea_de = next(r for r in records if r["id"] == "sea_lake:de")
    description = concept_for_label("EuroSAT", "SeaLake").description["en"]
    assert sea_de == {
        "id": "sea_lake:de",
        "text": f"Meer oder See: {description}",
        "concept": "sea_lake",
        "level": "scene",
        "lang": "de",
        "name": "Meer oder See",
        "description_lang": "en",
        "datasets": ["EuroSAT", "RESISC45"],
    }


def test_records_for_some_languages_only() -> None:
    concepts = load_concepts()
    records = knowledge_records(["de", "ko"])
    assert {r["lang"] for r in records} == {"de", "ko"}
    expected = sum(("de" in c.names) + ("ko" in c.names) for c in concepts)
    assert len(records) == expected
    objects_de = [r for r in records if r["level"] == "object" and r["lang"] == "de"]
    assert len(objects_de) == sum(c.level == "object" and "de" in c.names for c in concepts)
    with pytest.raises(KeyError, match="unknown language"):
        knowledge_records(["xx"])


def _concept(**overrides: object) -> dict:
    names = {lang: f"name {lang}" for lang in LANGUAGES}
    base = {
        "id": "thing",
        "level": "object",
        "datasets": ["DOTA"],
        "names": names,
        "description": {"en": "A thing.", "de": "Ein Ding."},
        "labels": {"DOTA": "thing"},
    }
    return base | overrides


def _write(tmp_path: Path, concepts: list[dict]) -> Path:
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(concepts), encoding="utf-8")
    return path


def test_own_language_description_is_used_when_present(tmp_path: Path) -> None:
    path = _write(tmp_path, [_concept()])
    by_lang = {r["lang"]: r for r in knowledge_records(path=path)}
    assert by_lang["de"]["text"] == "name de: Ein Ding."
    assert by_lang["de"]["description_lang"] == "de"
    assert by_lang["fr"]["text"] == "name fr: A thing."


def test_english_only_concepts_give_english_records_and_clear_errors(tmp_path: Path) -> None:
    english_only = _concept(
        id="jet", datasets=["xView"], names={"en": "jet"}, labels={"xView": "Jet"}
    )
    path = _write(tmp_path, [_concept(), english_only])
    records = knowledge_records(path=path)
    assert len(records) == len(LANGUAGES) + 1
    assert [r["lang"] for r in records if r["concept"] == "jet"] == ["en"]
    assert class_names("xView", "en", path=path) == {"Jet": "jet"}
    with pytest.raises(KeyError, match="xView classes without a 'de' name: Jet"):
        class_names("xView", "de", path=path)


@pytest.mark.parametrize(
    ("concepts", "message"),
    [
        ([_concept(names={"en": "thing"})], r"'thing': a class of \['DOTA'\] needs names .*'pt'"),
        ([_concept(), _concept(labels={"DOTA": "other"})], "duplicate concept id 'thing'"),
        ([_concept(level="region")], "unknown level 'region'"),
        ([_concept(level="scene")], "level must be 'object'"),
        ([_concept(), _concept(id="twin")], "DOTA label 'thing' is claimed by both"),
        ([_concept(labels={"ImageNet": "x"}, datasets=["ImageNet"])], "unknown dataset"),
        ([_concept(datasets=["DIOR"])], "must list the keys of labels"),
        ([_concept(names={"en": "x", "jp": "x"})], r"unknown language\(s\) \['jp'\]"),
        ([{"id": "thing"}], "lacks field"),
        ({"not": "a list"}, "top level must be a list"),
    ],
)
def test_bad_files_are_rejected_naming_the_file(
    tmp_path: Path, concepts: object, message: str
) -> None:
    path = tmp_path / "concepts.json"
    path.write_text(json.dumps(concepts), encoding="utf-8")
    with pytest.raises(ConceptsFileError, match=message) as error:
        load_concepts(path)
    assert str(path) in str(error.value)


def test_unreadable_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("[{", encoding="utf-8")
    with pytest.raises(ConceptsFileError, match="broken.json: cannot read concepts"):
        load_concepts(path)


def test_knowledge_queries_name_every_concept_in_a_template_never_a_stored_text() -> None:
    records = knowledge_records()
    queries = [query["text"] for query in knowledge_queries()]
    assert len(queries) == len(records) == len(set(queries))
    assert not set(queries) & {record["text"] for record in records}
    assert queries[0] == "a satellite photo of annual cropland."
    assert all(record["name"] in query for record, query in zip(records, queries))


def test_a_copied_checkpoint_keeps_its_identity(rs_checkpoint: Path, tmp_path: Path):
    """A knowledge base accepts any copy of the weights it was built with: nothing of the path
    (or of the data the model was trained on) enters the identity hash."""
    copy = shutil.copy(rs_checkpoint, tmp_path / "moved.ckpt")
    original, moved = load_encoder(str(rs_checkpoint)), load_encoder(str(copy))
    assert original.name == str(rs_checkpoint.resolve()) and moved.name == str(copy.resolve())
    assert original.identity()["sha256"] == moved.identity()["sha256"]
