"""Zero-shot and retrieval evaluation of medical checkpoints: hooks, CLI and ITM re-ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.errors import DataRootError
from domainvlm.core.zeroshot import TemplateError, fill
from domainvlm.domains.medical import PLUGIN
from domainvlm.domains.medical.evaluation_data import organ_name
from domainvlm.domains.medical.templates import templates

from tests.helpers import run_cli


def manifest_cases(root: Path, split: str) -> list[dict]:
    cases = json.loads((root / "manifest.json").read_text())["cases"]
    return [case for case in cases if case["split"] == split]


def hand_recall(scores: torch.Tensor, k: int) -> float:
    """Recall@k of queries (rows) whose positive is the gallery item of the same index."""
    top = scores.topk(k, dim=1).indices
    return (top == torch.arange(len(scores))[:, None]).any(dim=1).double().mean().item()


# --------------------------------------------------------------------------------- zero-shot


def test_templates_are_english_only():
    assert fill(templates("en")[2], "chest") == "CT scan of the chest."
    with pytest.raises(TemplateError, match="no medical templates for language 'de'"):
        templates("de")


def test_zeroshot_data_labels_each_held_out_image_with_its_organ(sample_root: Path):
    data = PLUGIN.zeroshot_data(sample_root, "test", "en")
    cases = manifest_cases(sample_root, "test")
    assert data.classnames == ["abdomen", "brain", "chest"]
    assert [path.name for path in data.paths] == [f"{case['id']}.dcm" for case in cases]
    assert [data.classnames[label] for label in data.labels] == [case["organ"] for case in cases]
    assert data.templates == templates("en")
    assert organ_name("ABD") == "abdomen" and organ_name("Chest_lung") == "chest lung"


def test_zeroshot_data_needs_vqa_annotations(sample_root: Path, tmp_path: Path):
    with pytest.raises(DataRootError, match="testset.json"):
        PLUGIN.zeroshot_data(tmp_path, "test", "en")
    with pytest.raises(DataRootError, match="no 'val' split"):
        PLUGIN.zeroshot_data(sample_root, "val", "en")


def test_eval_zeroshot_equals_the_template_averaged_itm_scores(
    pretrained: Path, sample_root: Path, capsys
):
    code, lines, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", pretrained, "--data", sample_root
    )
    assert code == 0, _
    result = json.loads(lines[0])
    system = load_system(pretrained)
    encoder = system.encoder()
    data = PLUGIN.zeroshot_data(sample_root, "test", "en")
    texts = [fill(t, name) for name in data.classnames for t in data.templates]
    images = torch.stack([encoder.load_image(path) for path in data.paths])
    logits = system.itm_scores(images, texts).reshape(len(images), 3, len(data.templates))
    predicted = logits.mean(dim=2).argmax(dim=1)
    labels = torch.tensor(data.labels)
    assert code == 0 and result["num_samples"] == len(images) == 7
    assert result["acc1"] == pytest.approx((predicted == labels).double().mean().item())
    assert "acc5" not in result  # three classes


def test_zeroshot_command_on_a_dicom_uses_the_medical_templates(
    pretrained: Path, sample_root: Path, capsys
):
    path = sample_root / "images" / "SYN_0004.dcm"
    code, lines, _ = run_cli(
        capsys, "zeroshot", "--checkpoint", pretrained, "--classes", "chest,brain", path
    )
    prediction = json.loads(lines[0])
    system = load_system(pretrained)
    image = system.encoder().load_image(path)[None]
    texts = [fill(t, name) for name in ("chest", "brain") for t in templates("en")]
    expected = system.itm_scores(image, texts).reshape(2, -1).mean(dim=1).softmax(dim=0)
    by_label = {row["label"]: row["probability"] for row in prediction["top_k"]}
    assert code == 0 and by_label["chest"] == pytest.approx(expected[0].item(), abs=1e-5)
    assert by_label["brain"] == pytest.approx(expected[1].item(), abs=1e-5)


# --------------------------------------------------------------------------------- retrieval


def test_retrieval_data_pairs_each_held_out_image_with_its_report(sample_root: Path):
    data = PLUGIN.retrieval_data(sample_root, "test")
    assert len(data.paths) == len(data.captions) == 7 and data.image_index == list(range(7))
    report = (sample_root / "reports" / f"{data.paths[0].stem}.txt").read_text()
    impression = report.split("IMPRESSION:")[1].strip()
    findings = report.split("FINDINGS:")[1].split("IMPRESSION:")[0].strip()
    assert data.captions[0] == f"{impression} {findings}"


def test_eval_retrieval_embedding_and_full_itm_rerank_match_a_hand_computation(
    pretrained: Path, sample_root: Path, capsys
):
    """A shortlist as long as the gallery makes the re-ranked run exhaustive ITM ranking."""
    code, lines, _ = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", pretrained, "--data", sample_root,
        "--rerank", "7",
    )  # fmt: skip
    assert code == 0, _
    result = json.loads(lines[0])
    system = load_system(pretrained)
    encoder = system.encoder()
    data = PLUGIN.retrieval_data(sample_root, "test")
    images = torch.stack([encoder.load_image(path) for path in data.paths])
    cosine = encoder.encode_images(images) @ encoder.encode_texts(data.captions).T  # [image, text]
    itm = system.itm_scores(images, data.captions)
    assert code == 0 and result["num_images"] == result["num_texts"] == 7
    assert result["reranked"]["shortlist"] == 7
    for k in (1, 5):
        assert result[f"text_retrieval_recall@{k}"] == pytest.approx(hand_recall(cosine, k))
        assert result[f"image_retrieval_recall@{k}"] == pytest.approx(hand_recall(cosine.T, k))
        reranked = result["reranked"]
        assert reranked[f"text_retrieval_recall@{k}"] == pytest.approx(hand_recall(itm, k))
        assert reranked[f"image_retrieval_recall@{k}"] == pytest.approx(hand_recall(itm.T, k))
