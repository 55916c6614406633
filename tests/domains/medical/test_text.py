from __future__ import annotations

import json
from pathlib import Path

import pytest
from domainvlm.core.errors import DataRootError
from domainvlm.domains.medical.text import (
    AnnotationError,
    VQAItem,
    answer_vocabulary,
    detect_vqa_format,
    normalize_answer,
    read_medicat_jsonl,
    read_report,
    read_roco_captions,
    read_vqa,
    read_vqa_splits,
    split_report_sections,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_roco_captions(tmp_path: Path) -> None:
    path = write(
        tmp_path / "captions.txt",
        "ROCO_00002\t Computed tomography scan in axial view showing obliteration of the left "
        "maxillary sinus \n"
        "\n"
        "ROCO_00003\tChest X-ray showing a nodule\n"
        "in the right upper lobe.\n"
        "ROCO_00004\tMRI  of the   brain.\n",
    )
    captions = read_roco_captions(path)
    assert captions == {
        "ROCO_00002": "Computed tomography scan in axial view showing obliteration of the left "
        "maxillary sinus",
        "ROCO_00003": "Chest X-ray showing a nodule in the right upper lobe.",
        "ROCO_00004": "MRI of the brain.",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a caption without an id\n", "line 1: expected 'ID<TAB>caption'"),
        ("ROCO_1\tfirst\nROCO_2 second, tab missing\n", "line 2: expected 'ID<TAB>caption'"),
        ("ROCO_1\tfirst\n\nROCO_1\tagain\n", "line 3: duplicate ID 'ROCO_1' \\(first on line 1\\)"),
        ("ROCO_1\tfirst\nROCO_2\t  \n", "line 2: empty caption for 'ROCO_2'"),
        ("\tno id\n", "line 1: invalid image ID ''"),
    ],
)
def test_roco_malformed_rows(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "captions.txt", text)
    with pytest.raises(AnnotationError, match=message) as error:
        read_roco_captions(path)
    assert str(path) in str(error.value)


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(DataRootError, match="file not found"):
        read_roco_captions(tmp_path / "nope.txt")


def test_medicat_jsonl(tmp_path: Path) -> None:
    rows = [
        {
            "pdf_hash": "abc123",
            "fig_uri": "2-Figure1-1.png",
            "fig_key": "Figure1",
            "s2_caption": "Figure 1. CT of the  chest.",
            "s2orc_references": ["CT showed a mass (Figure 1).", ""],
            "radiology": True,
        },
        {
            "pdf_hash": "def456",
            "fig_uri": "3-Figure2-1.png",
            "s2_caption": "Histology slide.",
            "s2orc_references": None,
            "radiology": False,
        },
    ]
    path = write(tmp_path / "medicat.jsonl", "\n".join(json.dumps(row) for row in rows) + "\n")
    figures = read_medicat_jsonl(path)
    assert [figure.image for figure in figures] == [
        "abc123_2-Figure1-1.png",
        "def456_3-Figure2-1.png",
    ]
    assert figures[0].caption == "Figure 1. CT of the chest."
    assert figures[0].references == ("CT showed a mass (Figure 1).",)
    assert figures[1].references == ()
    assert [figure.image for figure in read_medicat_jsonl(path, radiology_only=True)] == [
        "abc123_2-Figure1-1.png"
    ]
    broken = write(tmp_path / "broken.jsonl", json.dumps(rows[0]) + "\n{not json\n")
    with pytest.raises(AnnotationError, match="line 2: invalid JSON"):
        read_medicat_jsonl(broken)
    missing = write(tmp_path / "missing.jsonl", json.dumps({"pdf_hash": "x"}) + "\n")
    with pytest.raises(AnnotationError, match="line 1: missing fig_uri, s2_caption"):
        read_medicat_jsonl(missing)


MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough.

 COMPARISON:  None.

 FINDINGS:
 LUNGS: There is a 1 cm nodule in the left upper lobe.
 No pleural effusion.  Heart size is normal.

 IMPRESSION:
 Left upper lobe nodule.
 Follow-up CT recommended.
"""


def test_report_sections() -> None:
    sections = split_report_sections(MIMIC_STYLE)
    assert sections["findings"] == (
        "LUNGS: There is a 1 cm nodule in the left upper lobe. No pleural effusion. "
        "Heart size is normal."
    )
    assert sections["impression"] == "Left upper lobe nodule. Follow-up CT recommended."
    assert sections["examination"] == "CHEST (PA AND LAT)"
    assert sections["comparison"] == "None."
    assert "lungs" not in sections

    inline = split_report_sections("Findings: clear lungs. Note: no change.\nConclusion: normal.")
    assert inline == {"findings": "clear lungs. Note: no change.", "impression": "normal."}
    assert split_report_sections("Heart is normal in size.") == {
        "findings": "Heart is normal in size.",
        "impression": "",
    }
    assert split_report_sections("IMPRESSION: None acute.")["findings"] == ""


def test_read_report(tmp_path: Path) -> None:
    path = write(tmp_path / "r.txt", "FINDINGS: a\nIMPRESSION: b\n")
    assert read_report(path) == {"findings": "a", "impression": "b"}
    latin = tmp_path / "latin.txt"
    latin.write_bytes("FINDINGS: caf\xe9".encode("latin-1"))
    with pytest.raises(AnnotationError, match="not UTF-8 text"):
        read_report(latin)


VQA_RAD_ROWS = [
    {
        "qid": 1,
        "image_name": "synpic54610.jpg",
        "image_organ": "HEAD",
        "answer": "Yes",
        "answer_type": "CLOSED",
        "question_type": "PRES",
        "question": "Are regions of the brain infarcted?",
        "phrase_type": "freeform",
    },
    {
        "qid": 2,
        "image_name": "synpic29265.jpg",
        "image_organ": "CHEST",
        "answer": 2,
        "answer_type": "OPEN ",
        "question_type": "COUNT",
        "question": "How many  nodules are seen?",
        "phrase_type": "para",
    },
]
SLAKE_ROWS = [
    {
        "img_id": 1,
        "img_name": "xmlab1/source.jpg",
        "question": "Which part of the body does this image belong to?",
        "answer": "Abdomen",
        "q_lang": "en",
        "location": "Abdomen",
        "modality": "MRI",
        "answer_type": "OPEN",
        "base_type": "vqa",
        "content_type": "Position",
        "triple": ["vhead", "_", "_"],
        "qid": 0,
    },
    {
        "img_id": 1,
        "img_name": "xmlab1/source.jpg",
        "question": "图片中的器官属于哪个部位?",
        "answer": "腹部",
        "q_lang": "zh",
        "answer_type": "OPEN",
        "content_type": "Position",
        "qid": 1,
    },
    {
        "img_id": 2,
        "img_name": "xmlab2/source.jpg",
        "question": "Does the picture contain liver?",
        "answer": "Yes",
        "q_lang": "en",
        "answer_type": "CLOSED",
        "content_type": "Organ",
        "qid": 2,
    },
]


def test_vqa_rad(tmp_path: Path) -> None:
    items = read_vqa(write(tmp_path / "trainset.json", json.dumps(VQA_RAD_ROWS)), "vqa_rad")
    assert items == [
        VQAItem(
            "synpic54610.jpg",
            "Are regions of the brain infarcted?",
            "Yes",
            "closed",
            "1",
            "PRES",
            "HEAD",
        ),
        VQAItem(
            "synpic29265.jpg", "How many nodules are seen?", "2", "open", "2", "COUNT", "CHEST"
        ),
    ]


def test_slake_keeps_english_rows(tmp_path: Path) -> None:
    items = read_vqa(
        write(tmp_path / "train.json", json.dumps(SLAKE_ROWS, ensure_ascii=False)), "slake"
    )
    assert [(item.image, item.answer, item.answer_type, item.qid) for item in items] == [
        ("xmlab1/source.jpg", "Abdomen", "open", "0"),
        ("xmlab2/source.jpg", "Yes", "closed", "2"),
    ]
    assert items[0].organ == "Abdomen"
    assert items[1].question_type == "Organ"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{**VQA_RAD_ROWS[0], "answer_type": "MAYBE"}],
            "row 0: answer_type must be OPEN or CLOSED",
        ),
        ([VQA_RAD_ROWS[0], {"question": "q"}], "row 1: missing image_name, answer, answer_type"),
        ({"not": "a list"}, "expected a JSON list"),
        ([VQA_RAD_ROWS[0], "text"], "row 1: expected a JSON object"),
    ],
)
def test_vqa_malformed(tmp_path: Path, rows: object, message: str) -> None:
    path = write(tmp_path / "testset.json", json.dumps(rows))
    with pytest.raises(AnnotationError, match=message):
        read_vqa(path, "vqa_rad")
    bad_json = write(tmp_path / "bad.json", "[\n{\n")
    with pytest.raises(AnnotationError, match="line 3: invalid JSON"):
        read_vqa(bad_json, "slake")


def test_vqa_splits(tmp_path: Path) -> None:
    rad = tmp_path / "vqa_rad"
    write(rad / "trainset.json", json.dumps(VQA_RAD_ROWS))
    write(rad / "testset.json", json.dumps(VQA_RAD_ROWS[:1]))
    splits = read_vqa_splits(rad, "vqa_rad")
    assert sorted(splits) == ["test", "train"]
    assert splits["test"][0].image == str((rad / "images" / "synpic54610.jpg").resolve())

    slake = tmp_path / "slake"
    for name in ("train.json", "validate.json", "test.json"):
        write(slake / name, json.dumps(SLAKE_ROWS))
    splits = read_vqa_splits(slake, "slake")
    assert {split: len(items) for split, items in splits.items()} == {
        "train": 2,
        "val": 2,
        "test": 2,
    }
    assert splits["val"][0].image == str((slake / "imgs" / "xmlab1" / "source.jpg").resolve())

    write(rad / "testset.json", json.dumps([{**VQA_RAD_ROWS[0], "image_name": "../../etc/passwd"}]))
    with pytest.raises(AnnotationError, match="escapes the dataset root"):
        read_vqa_splits(rad, "vqa_rad")
    with pytest.raises(DataRootError, match="slake train annotations not found"):
        read_vqa_splits(tmp_path / "empty", "slake")


def test_each_format_names_its_own_keys(tmp_path: Path) -> None:
    # SLAKE rows under VQA-RAD's key names (and the reverse) are refused by name.
    slake = write(tmp_path / "test.json", json.dumps([{**SLAKE_ROWS[0], "q_lang": None}]))
    with pytest.raises(AnnotationError, match="row 0: missing q_lang$"):
        read_vqa(slake, "slake")
    with pytest.raises(AnnotationError, match="row 0: missing image_name$"):
        read_vqa(slake, "vqa_rad")
    rad = write(tmp_path / "testset.json", json.dumps(VQA_RAD_ROWS))
    with pytest.raises(AnnotationError, match="row 0: missing img_name, q_lang$"):
        read_vqa(rad, "slake")
    with pytest.raises(ValueError, match="dataset must be one of"):
        read_vqa(rad, "vqa-rad")


def test_detect_vqa_format(tmp_path: Path) -> None:
    write(tmp_path / "rad" / "testset.json", "[]")
    write(tmp_path / "slake" / "test.json", "[]")
    assert detect_vqa_format(tmp_path / "rad") == "vqa_rad"
    assert detect_vqa_format(tmp_path / "slake") == "slake"
    with pytest.raises(DataRootError, match="testset.json or test.json"):
        detect_vqa_format(tmp_path)


def test_answer_vocabulary() -> None:
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer("Left  Lung!") == "left lung"
    assert normalize_answer(2) == "2"
    answers = ["Yes", "yes.", "YES ", "No", "no", "left lung", "Left Lung.", "2", "", "?"]
    items = [VQAItem("i.jpg", "q", answer, "open") for answer in answers]
    assert answer_vocabulary(items) == ["yes", "left lung", "no", "2"]
    assert answer_vocabulary(items, min_count=2) == ["yes", "left lung", "no"]
    assert answer_vocabulary(items, min_count=3) == ["yes"]
