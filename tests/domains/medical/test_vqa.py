"""`domainvlm eval vqa` on medical checkpoints: accuracy per answer type beside the majority answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.domains.medical import PLUGIN
from domainvlm.domains.medical.datamodule import MedicalVQADataModule
from domainvlm.domains.medical.system import M3AEVQASystem
from domainvlm.domains.medical.text import normalize_answer

from tests.helpers import run_cli, save_checkpoint


def test_eval_vqa_matches_answers_by_hand(sample_root: Path, tmp_path: Path, capsys):
    datamodule = MedicalVQADataModule(root=str(sample_root))
    torch.manual_seed(0)
    system = M3AEVQASystem(classes=datamodule.classes())
    checkpoint = save_checkpoint(system, tmp_path / "vqa.ckpt")
    code, lines, err = run_cli(
        capsys, "eval", "vqa", "--checkpoint", checkpoint, "--data", sample_root
    )
    assert code == 0, err
    result = json.loads(lines[0])

    items = datamodule.items("test")
    load = system.image_loader()
    answers = system.answer(
        torch.stack([load(i.image) for i in items]), [i.question for i in items]
    )
    hits = [answer == normalize_answer(item.answer) for answer, item in zip(answers, items)]
    closed = [hit for hit, item in zip(hits, items) if item.answer_type == "closed"]
    open_ = [hit for hit, item in zip(hits, items) if item.answer_type == "open"]
    assert result["domain"] == "medical" and result["num_questions"] == len(items)
    assert result["accuracy"] == pytest.approx(
        {
            "overall": sum(hits) / len(hits),
            "open": sum(open_) / len(open_),
            "closed": sum(closed) / len(closed),
        }
    )
    assert result["majority_answer"] == datamodule.classes()[0] == "no"
    assert result["majority_accuracy"] == pytest.approx(datamodule.majority_baseline("test"))


def test_eval_vqa_refuses_a_pretraining_checkpoint(sample_root: Path, pretrained: Path, capsys):
    code, _, err = run_cli(capsys, "eval", "vqa", "--checkpoint", pretrained, "--data", sample_root)
    assert code == 1 and "not an M3AEVQASystem" in err and "tiny_vqa.yaml" in err


def test_vqa_data_reads_the_split_and_names_a_missing_one(sample_root: Path):
    data = PLUGIN.vqa_data(sample_root, "test")
    items = MedicalVQADataModule(root=str(sample_root)).items("test")
    assert data.paths == [Path(item.image) for item in items]
    assert data.answers == [normalize_answer(item.answer) for item in items]
    assert set(data.answer_types) == {"open", "closed"}
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        PLUGIN.vqa_data(sample_root, "val")
