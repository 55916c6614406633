"""`python -m domainvlm.domains.medical.vqa_report`: accuracy per answer type beside the majority answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.domains.medical.datamodule import MedicalVQADataModule
from domainvlm.domains.medical.system import M3AEVQASystem
from domainvlm.domains.medical.text import normalize_answer
from domainvlm.domains.medical.vqa_report import format_rows, main

from tests.helpers import save_checkpoint


def test_report_matches_answers_by_hand(
    sample_root: Path, pretrained: Path, tmp_path: Path, capsys
):
    datamodule = MedicalVQADataModule(root=str(sample_root))
    torch.manual_seed(0)
    system = M3AEVQASystem(classes=datamodule.classes())
    checkpoint = save_checkpoint(system, tmp_path / "vqa.ckpt")
    assert main([str(checkpoint), "--data", str(sample_root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)

    items = datamodule.items("test")
    load = system.image_loader()
    answers = system.answer(
        torch.stack([load(i.image) for i in items]), [i.question for i in items]
    )
    hits = [answer == normalize_answer(item.answer) for answer, item in zip(answers, items)]
    closed = [hit for hit, item in zip(hits, items) if item.answer_type == "closed"]
    open_ = [hit for hit, item in zip(hits, items) if item.answer_type == "open"]
    assert rows[str(checkpoint)] == pytest.approx(
        {
            "overall": sum(hits) / len(hits),
            "open": sum(open_) / len(open_),
            "closed": sum(closed) / len(closed),
        }
    )
    assert rows["majority answer ('no')"] == datamodule.majority_baseline("test")

    with pytest.raises(SystemExit) as refused:
        main([str(pretrained), "--data", str(sample_root)])
    assert refused.value.code == 2 and "not an M3AEVQASystem" in capsys.readouterr().err


def test_table_prints_percent_and_a_dash_for_a_missing_type():
    table = format_rows(
        {"model": {"overall": 0.5, "open": 0.25, "closed": 0.75}, "b": {"overall": 1.0}}
    )
    assert [line.split() for line in table.splitlines()] == [
        ["overall", "open", "closed"],
        ["model", "50.0", "25.0", "75.0"],
        ["b", "100.0", "-", "-"],
    ]
