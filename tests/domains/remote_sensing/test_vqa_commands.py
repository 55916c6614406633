"""The RSVQA semantic experts answer from the CLI: ``ask`` and ``eval vqa``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.domains.remote_sensing import PLUGIN
from domainvlm.domains.remote_sensing.datamodule import RSVQADataModule
from domainvlm.domains.remote_sensing.rsvqa import RSVQADataset
from domainvlm.domains.remote_sensing.system import SemanticExpertsSystem, raster_loader

from tests.helpers import run_cli, save_checkpoint


@pytest.fixture(scope="module")
def vqa_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = PLUGIN.write_sample(tmp_path_factory.mktemp("rs_vqa") / "sample", size="small")
    datamodule = RSVQADataModule(root=str(root), bands=[3, 2, 1, 4])
    torch.manual_seed(0)
    # Without retrieval: embedding the knowledge base with random towers is the slow part, and
    # the hooks under test are the same either way.
    system = SemanticExpertsSystem(
        task="vqa", classes=datamodule.classes(), in_chans=4, dim=32, use_retrieval=False,
        preprocessing=datamodule.preprocessing(),
    )  # fmt: skip
    return root, save_checkpoint(system, root.parent / "experts_vqa.ckpt")


def test_ask_the_experts_about_a_geotiff(vqa_checkpoint: tuple[Path, Path], capsys):
    root, checkpoint = vqa_checkpoint
    questions = RSVQADataset(root / "rsvqa", "test")
    image, question = questions.paths[0], questions.questions[0][1]
    code, lines, err = run_cli(
        capsys, "ask", "--checkpoint", checkpoint, "--question", question, "--top-k", 3, image
    )
    assert code == 0, err
    row = json.loads(lines[0])

    from domainvlm.core.checkpoint import load_system

    system = load_system(checkpoint)
    with torch.no_grad():
        logits, _ = system(raster_loader(system.preprocessing)(image)[None], [question])
    probabilities = logits.softmax(-1)[0]
    best = int(probabilities.argmax())
    assert row["answer"] == system.hparams.classes[best]
    assert row["probability"] == pytest.approx(float(probabilities[best]), abs=1e-5)
    assert len(row["top_k"]) == 3


def test_eval_vqa_scores_the_experts_on_rsvqa(vqa_checkpoint: tuple[Path, Path], capsys):
    root, checkpoint = vqa_checkpoint
    code, lines, err = run_cli(capsys, "eval", "vqa", "--checkpoint", checkpoint, "--data", root)
    assert code == 0, err
    result = json.loads(lines[0])
    test = RSVQADataset(root / "rsvqa", "test")
    assert (result["domain"], result["num_questions"]) == ("remote_sensing", len(test))
    assert set(result["accuracy"]) == {"overall", *test.types}
    assert 0 <= result["accuracy"]["overall"] <= 1
