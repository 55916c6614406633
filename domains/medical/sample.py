"""A small synthetic radiology dataset in the real on-disk formats, for offline runs and tests.

Every image has learnable structure - modality (CT or radiograph), organ (chest, brain, abdomen),
finding (bright nodule, dark cyst or none) and the patient side of the finding - and the same facts
are written as ROCO-style captions, FINDINGS/IMPRESSION reports and VQA-RAD questions. The DICOM
files deliberately carry fake patient identifiers so that the reader's whitelist is exercised on
our own data. Images follow the radiological convention: the patient's left is on the image right.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from domainvlm.core.files import atomic_open, atomic_write_json
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    RLELossless,
    generate_uid,
)

SIZES = {"small": (36, 64), "demo": (600, 128)}
"""Number of cases and image side in pixels."""

MODALITIES = ("CT", "DX")
ORGANS = ("chest", "brain", "abdomen")
FINDINGS = ("nodule", "cyst", "none")
SIDES = ("left", "right")
TRANSFER_SYNTAXES = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
)
"""Cycled over the cases; JPEG 2000 Lossless is encoded by pylibjpeg-openjpeg, RLE by pydicom."""

HELD_OUT_EVERY = 5
FAKE_PATIENT_NAME = "SAMPLE^SYNTHETIC"
FAKE_BIRTH_DATE = "19000101"

_CT_WINDOWS = {"chest": ([-600, 50], [1500, 350]), "brain": ([40], [80]), "abdomen": ([40], [400])}
_BODY_PART = {"chest": "CHEST", "brain": "HEAD", "abdomen": "ABDOMEN"}
_VQA_ORGAN = {"chest": "CHEST", "brain": "HEAD", "abdomen": "ABD"}
_MODALITY_ANSWER = {"CT": "ct", "DX": "x-ray"}
_MODALITY_WORDS = {
    "CT": ("Computed tomography", "Axial CT image", "CT scan"),
    "DX": ("Radiograph", "Plain X-ray", "Frontal radiograph"),
}
_REGION = {"chest": "lung", "brain": "cerebral hemisphere", "abdomen": "hemiabdomen"}
_FINDING_WORDS = {
    "nodule": ("nodule", "bright nodule", "well-defined hyperdense nodule"),
    "cyst": ("cyst", "dark cystic lesion", "well-circumscribed low-density cyst"),
}
# Ellipses (centre y, centre x, radius y, radius x, value) on a [-1, 1] grid, painted in order.
# Values are Hounsfield units for CT and relative attenuation in [0, 1] for radiographs.
_ANATOMY: dict[tuple[str, str], list[tuple[float, float, float, float, float]]] = {
    ("CT", "chest"): [
        (0.0, 0.0, 0.75, 0.9, 40.0),
        (-0.05, -0.42, 0.55, 0.3, -700.0),
        (-0.05, 0.42, 0.55, 0.3, -700.0),
        (0.15, 0.06, 0.3, 0.22, 40.0),
        (0.55, 0.0, 0.12, 0.1, 700.0),
    ],
    ("CT", "brain"): [
        (0.0, 0.0, 0.85, 0.7, 1000.0),
        (0.0, 0.0, 0.78, 0.63, 35.0),
        (-0.05, -0.12, 0.2, 0.06, 5.0),
        (-0.05, 0.12, 0.2, 0.06, 5.0),
    ],
    ("CT", "abdomen"): [
        (0.0, 0.0, 0.7, 0.9, -100.0),
        (0.0, 0.0, 0.62, 0.82, 40.0),
        (-0.1, -0.4, 0.4, 0.35, 60.0),
        (0.3, 0.38, 0.14, 0.09, 30.0),
        (0.45, 0.0, 0.12, 0.1, 700.0),
    ],
    ("DX", "chest"): [
        (0.0, 0.0, 0.92, 0.85, 0.55),
        (-0.05, -0.42, 0.55, 0.3, 0.15),
        (-0.05, 0.42, 0.55, 0.3, 0.15),
        (0.15, 0.06, 0.3, 0.22, 0.6),
        (0.0, 0.0, 0.95, 0.07, 0.8),
    ],
    ("DX", "brain"): [(0.0, 0.0, 0.85, 0.75, 0.9), (0.0, 0.0, 0.78, 0.68, 0.5)],
    ("DX", "abdomen"): [
        (0.0, 0.0, 0.95, 0.85, 0.5),
        (-0.1, -0.4, 0.4, 0.35, 0.55),
        (0.0, 0.0, 0.95, 0.07, 0.8),
        (0.75, 0.0, 0.2, 0.6, 0.75),
    ],
}
_LESION_VALUE = {
    ("CT", "chest", "nodule"): 100.0,
    ("CT", "chest", "cyst"): -1000.0,
    ("CT", "brain", "nodule"): 90.0,
    ("CT", "brain", "cyst"): 0.0,
    ("CT", "abdomen", "nodule"): 160.0,
    ("CT", "abdomen", "cyst"): -60.0,
    ("DX", "chest", "nodule"): 0.75,
    ("DX", "chest", "cyst"): 0.0,
    ("DX", "brain", "nodule"): 0.85,
    ("DX", "brain", "cyst"): 0.2,
    ("DX", "abdomen", "nodule"): 0.85,
    ("DX", "abdomen", "cyst"): 0.2,
}
_BACKGROUND = {"CT": -1000.0, "DX": 0.05}
_NOISE = {"CT": 6.0, "DX": 0.02}


@dataclass(frozen=True)
class SampleCase:
    id: str
    split: Literal["train", "test"]
    modality: str
    organ: str
    finding: str
    laterality: str | None
    transfer_syntax: str
    frames: int
    photometric: str

    @property
    def image(self) -> str:
        return f"images/{self.id}.dcm"


def write_sample(
    out_dir: str | Path, size: Literal["small", "demo"] = "small", seed: int = 0
) -> Path:
    """Write the synthetic dataset to ``out_dir`` and return it; the same seed gives the same bytes.

    Layout: ``images/*.dcm``, ``reports/<id>.txt``, ``train/captions.txt`` and
    ``test/captions.txt`` (ROCO), ``trainset.json`` and ``testset.json`` (VQA-RAD),
    ``manifest.json`` (the labels of every case) and ``README.txt``.
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    out_dir = Path(out_dir)
    count, side = SIZES[size]
    rng = np.random.default_rng(seed)
    cases = _plan_cases(count, rng)
    captions: dict[str, list[str]] = {"train": [], "test": []}
    questions: dict[str, list[dict]] = {"train": [], "test": []}
    for case in cases:
        _write_dicom(out_dir / case.image, case, _render(case, side, rng), seed)
        caption, report = _describe(case, rng)
        captions[case.split].append(f"{case.id}\t{caption}\n")
        with atomic_open(out_dir / "reports" / f"{case.id}.txt", encoding="utf-8") as handle:
            handle.write(report)
        first_qid = sum(len(rows) for rows in questions.values())
        questions[case.split].extend(_questions(case, rng, first_qid))
    for split in ("train", "test"):
        with atomic_open(out_dir / split / "captions.txt", encoding="utf-8") as handle:
            handle.writelines(captions[split])
        with atomic_open(out_dir / f"{split}set.json", encoding="utf-8") as handle:
            json.dump(questions[split], handle, indent=1)
    manifest = {"size": size, "seed": seed, "cases": [asdict(case) for case in cases]}
    atomic_write_json(out_dir / "manifest.json", manifest)
    with atomic_open(out_dir / "README.txt", encoding="utf-8") as handle:
        handle.write(_readme(size, seed, cases))
    return out_dir


def _plan_cases(count: int, rng: np.random.Generator) -> list[SampleCase]:
    """Cycle through every label combination in a fresh random order so both splits see all."""
    combos = [
        (modality, organ, finding, side)
        for modality in MODALITIES
        for organ in ORGANS
        for finding in FINDINGS
        for side in (SIDES if finding != "none" else (None,))
    ]
    cases: list[SampleCase] = []
    radiographs = 0
    multi_frame_written = False
    while len(cases) < count:
        for combo_index in rng.permutation(len(combos)):
            if len(cases) == count:
                break
            modality, organ, finding, side = combos[combo_index]
            index = len(cases)
            multi_frame = modality == "CT" and not multi_frame_written
            multi_frame_written = multi_frame_written or multi_frame
            photometric = "MONOCHROME2"
            if modality == "DX":
                photometric = "MONOCHROME1" if radiographs % 2 else "MONOCHROME2"
                radiographs += 1
            cases.append(
                SampleCase(
                    id=f"SYN_{index:04d}",
                    split="test" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train",
                    modality=modality,
                    organ=organ,
                    finding=finding,
                    laterality=side,
                    transfer_syntax=str(TRANSFER_SYNTAXES[index % len(TRANSFER_SYNTAXES)]),
                    frames=3 if multi_frame else 1,
                    photometric=photometric,
                )
            )
    return cases


def _render(case: SampleCase, side: int, rng: np.random.Generator) -> np.ndarray:
    """``[frames, side, side]`` physical values; a lesion is largest in the middle slice."""
    yy, xx = np.mgrid[-1 : 1 : side * 1j, -1 : 1 : side * 1j]
    shift_y, shift_x = rng.uniform(-0.04, 0.04, size=2)
    y, x = yy - shift_y, xx - shift_x
    base = np.full((side, side), _BACKGROUND[case.modality])
    for cy, cx, ry, rx, value in _ANATOMY[(case.modality, case.organ)]:
        base[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0] = value
    lesion = None
    if case.finding != "none":
        sign = 1.0 if case.laterality == "left" else -1.0
        lesion = (rng.uniform(-0.3, 0.2), sign * rng.uniform(0.28, 0.48), rng.uniform(0.09, 0.14))
    slices = []
    for index in range(case.frames):
        image = base.copy()
        if lesion is not None:
            cy, cx, radius = lesion
            radius *= 1.0 if index == case.frames // 2 else 0.7
            inside = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
            image[inside] = _LESION_VALUE[(case.modality, case.organ, case.finding)]
        slices.append(image + rng.normal(0.0, _NOISE[case.modality], size=image.shape))
    return np.stack(slices)


def _write_dicom(path: Path, case: SampleCase, volume: np.ndarray, seed: int) -> None:
    def uid(role: str) -> UID:
        return generate_uid(entropy_srcs=["domainvlm-medical-sample", str(seed), case.id, role])

    ct = case.modality == "CT"
    if case.frames > 1:
        sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    else:
        sop_class = CTImageStorage if ct else DigitalXRayImageStorageForPresentation
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid("instance")
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.PatientName = FAKE_PATIENT_NAME
    ds.PatientID = f"SYNTHETIC-{case.id}"
    ds.PatientBirthDate = FAKE_BIRTH_DATE
    ds.PatientSex = "O"
    ds.InstitutionName = "SYNTHETIC SAMPLE DATA"
    ds.StudyDate = "20000101"
    ds.Modality = case.modality
    ds.BodyPartExamined = _BODY_PART[case.organ]
    ds.ImageComments = "Synthetic sample image; no patient was imaged."
    side = volume.shape[-1]
    if ct:
        stored = np.clip(np.round(volume + 1024.0), 0, 4095).astype(np.int16)
        pixels = stored if case.frames > 1 else stored[0]
        ds.set_pixel_data(pixels, "MONOCHROME2", 16, generate_instance_uid=False)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = _CT_WINDOWS[case.organ]
        ds.PixelSpacing = [round(350.0 / side, 4)] * 2
        ds.SliceThickness = 5.0
        if case.frames > 1:
            ds.SliceLocationVector = [5.0 * (i - case.frames // 2) for i in range(case.frames)]
            ds.FrameIncrementPointer = 0x00182005
    else:
        stored = np.clip(np.round(volume[0] * 4095.0), 0, 4095).astype(np.uint16)
        if case.photometric == "MONOCHROME1":
            stored = 4095 - stored
        ds.set_pixel_data(stored, case.photometric, 12, generate_instance_uid=False)
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.ImagerPixelSpacing = ds.PixelSpacing = [round(430.0 / side, 4)] * 2
    transfer_syntax = UID(case.transfer_syntax)
    if transfer_syntax.is_compressed:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    else:
        ds.file_meta.TransferSyntaxUID = transfer_syntax
    with atomic_open(path, "wb") as handle:
        ds.save_as(handle, enforce_file_format=True)


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _describe(case: SampleCase, rng: np.random.Generator) -> tuple[str, str]:
    """A ROCO-style caption and a FINDINGS/IMPRESSION report for one case."""
    view = _pick(rng, _MODALITY_WORDS[case.modality])
    short = "CT" if case.modality == "CT" else "radiograph"
    if case.finding == "none":
        caption = _pick(
            rng,
            (
                f"{view} of the {case.organ} with no abnormality.",
                f"Normal {case.organ} {short}.",
                f"{view} of the {case.organ} showing no focal lesion.",
            ),
        )
        findings = (
            f"{view} of the {case.organ}. No focal lesion is seen. The {case.organ} appears normal."
        )
        impression = "No acute abnormality."
    else:
        lesion = _pick(rng, _FINDING_WORDS[case.finding])
        where = f"the {case.laterality} {_REGION[case.organ]}"
        caption = _pick(
            rng,
            (
                f"{view} of the {case.organ} showing a {lesion} in {where}.",
                f"{view} of the {case.organ}: {case.laterality}-sided {lesion}.",
                f"A {lesion} in {where} on {case.organ} {short}.",
            ),
        )
        findings = (
            f"{view} of the {case.organ}. There is a {lesion} in {where}. No other abnormality."
        )
        impression = f"{case.laterality.capitalize()} {case.organ} {case.finding}."
    exam = f"{short.upper()} {_BODY_PART[case.organ]}"
    report = (
        f"EXAMINATION: {exam}\nINDICATION: Synthetic sample case.\n\n"
        f"FINDINGS:\n{findings}\n\nIMPRESSION:\n{impression}\n"
    )
    return caption, report


def _questions(case: SampleCase, rng: np.random.Generator, first_qid: int) -> list[dict]:
    """VQA-RAD rows (open and closed) about one image; phrase_type marks paraphrases."""
    rows: list[dict] = []

    def ask(question_type: str, answer_type: str, answer: str, phrasings: tuple[str, ...]) -> None:
        choice = int(rng.integers(len(phrasings)))
        rows.append(
            {
                "qid": first_qid + len(rows),
                "image_name": f"{case.id}.dcm",
                "image_organ": _VQA_ORGAN[case.organ],
                "answer": answer,
                "answer_type": answer_type,
                "question_type": question_type,
                "question": phrasings[choice],
                "phrase_type": "freeform" if choice == 0 else "para",
            }
        )

    def yes_no(condition: bool) -> str:
        return "yes" if condition else "no"

    ask("ORGAN", "OPEN", case.organ, ("What organ is shown?", "Which organ is imaged?"))
    ask(
        "MODALITY",
        "OPEN",
        _MODALITY_ANSWER[case.modality],
        ("What imaging modality was used?", "How was this image taken?"),
    )
    ask("ABN", "OPEN", case.finding, ("What abnormality is seen?", "What is the lesion?"))
    for finding in ("nodule", "cyst"):
        phrasings = (f"Is there a {finding}?", f"Is a {finding} present?")
        ask("PRES", "CLOSED", yes_no(case.finding == finding), phrasings)
    ask(
        "MODALITY", "CLOSED", yes_no(case.modality == "CT"), ("Is this a CT?", "Is this a CT scan?")
    )
    if case.laterality is not None:
        ask(
            "POS", "OPEN", case.laterality, ("Where is the lesion?", "Which side is the lesion on?")
        )
        asked = _pick(rng, SIDES)
        phrasings = (f"Is the lesion on the {asked}?", f"Is the lesion {asked}-sided?")
        ask("POS", "CLOSED", yes_no(case.laterality == asked), phrasings)
    return rows


def _readme(size: str, seed: int, cases: list[SampleCase]) -> str:
    held_out = sum(case.split == "test" for case in cases)
    syntaxes = ", ".join(UID(uid).name for uid in TRANSFER_SYNTAXES)
    return f"""SYNTHETIC medical sample dataset (domainvlm, size={size}, seed={seed}).

Every image and text here is generated by domains/medical/sample.py. No patient was imaged.
The DICOM files carry FAKE patient identifiers (PatientName {FAKE_PATIENT_NAME}) on purpose, so
that the reader's whitelist of technical tags is tested on this data.

{len(cases)} cases, {held_out} held out (split "test"). Labels: modality {", ".join(MODALITIES)};
organ {", ".join(ORGANS)}; finding {", ".join(FINDINGS)}; laterality {", ".join(SIDES)} (patient
side; images follow the radiological convention, patient left on the image right).
CT files are 16-bit signed with RescaleIntercept -1024 and window tags; radiographs are 12-bit,
MONOCHROME1 or MONOCHROME2. Transfer syntaxes: {syntaxes}. One CT case is a 3-frame file.

images/<id>.dcm        the DICOM images
reports/<id>.txt       FINDINGS / IMPRESSION reports
train/captions.txt     ROCO-style captions (ID<TAB>caption), training split
test/captions.txt      ROCO-style captions, held-out split
trainset.json          VQA-RAD-format questions, training split (images under images/)
testset.json           VQA-RAD-format questions, held-out split
manifest.json          every case with its labels, split, transfer syntax and frame count
"""
