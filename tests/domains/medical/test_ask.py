"""Asking a medical VQA checkpoint about one frame of a multi-frame DICOM, from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.domains.medical.system import M3AEPretrainSystem, M3AEVQASystem
from pydicom.data import get_testdata_file

from tests.helpers import run_cli, save_checkpoint

SIZES = dict(
    image_size=32, patch=8, vision_width=32, vision_depth=2, vision_heads=2, context_length=64,
    text_width=32, text_depth=1, text_heads=2, hidden=32, fusion_layers=2, fusion_heads=2,
)  # fmt: skip
CLASSES = ["yes", "no", "left", "right"]
# Ask for the bundled file by exact name (a glob would try to download the rest).
TWO_FRAMES = Path(get_testdata_file("SC_rgb_rle_2frame.dcm", download=False))


def expected(system: M3AEVQASystem, frame: int, question: str) -> torch.Tensor:
    with torch.no_grad():
        image = system.image_loader(frame)(TWO_FRAMES)[None]
        return system(image, [question]).softmax(-1)[0]


def test_ask_answers_about_the_chosen_dicom_frame(tmp_path: Path, capsys):
    torch.manual_seed(0)
    system = M3AEVQASystem(classes=CLASSES, **SIZES).eval()
    checkpoint = save_checkpoint(system, tmp_path / "vqa.ckpt")
    question = "is the lesion on the left?"
    answers = {}
    for frame in (0, 1):
        code, lines, err = run_cli(
            capsys, "ask", "--checkpoint", checkpoint, "--question", question,
            "--frame", frame, "--top-k", 4, TWO_FRAMES,
        )  # fmt: skip
        assert code == 0, err
        answers[frame] = row = json.loads(lines[0])
        probabilities = expected(system, frame, question)
        best = int(probabilities.argmax())
        assert row["answer"] == CLASSES[best]
        assert row["probability"] == pytest.approx(float(probabilities[best]), abs=1e-5)
        assert sum(item["probability"] for item in row["top_k"]) == pytest.approx(1.0, abs=1e-5)
    # The two frames differ, so the model's distribution does too.
    assert answers[0]["top_k"] != answers[1]["top_k"]

    code, _, err = run_cli(
        capsys, "ask", "--checkpoint", checkpoint, "--question", question, "--frame", 2, TWO_FRAMES
    )
    assert code == 1 and "frame 2 requested but the file has 2 frame(s)" in err


def test_a_pretraining_checkpoint_is_told_to_use_a_vqa_one(tmp_path: Path, capsys):
    checkpoint = save_checkpoint(M3AEPretrainSystem(**SIZES), tmp_path / "pretrain.ckpt")
    code, _, err = run_cli(capsys, "ask", "--checkpoint", checkpoint, "--question", "q", TWO_FRAMES)
    assert code == 1 and "not an M3AEVQASystem" in err and "tiny_vqa.yaml" in err
