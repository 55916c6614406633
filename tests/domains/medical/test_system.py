from __future__ import annotations

from collections import Counter

import pytest
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.errors import CheckpointError
from domainvlm.core.zeroshot import ZeroShotClassifier
from domainvlm.domains.medical.datamodule import MedicalPretrainDataModule, MedicalVQADataModule
from domainvlm.domains.medical.system import M3AEPretrainSystem, M3AEVQASystem
from domainvlm.domains.medical.text import AnnotationError, normalize_answer

from tests.helpers import CONFIGS, fit_briefly


def test_pretrain_checkpoint_round_trip(pretrained, sample_root):
    checkpoint = torch.load(pretrained, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 2
    system = load_system(pretrained)
    assert isinstance(system, M3AEPretrainSystem) and system.hparams.passes == "joint"
    assert system.preprocessing["image_size"] == 64
    for name, value in system.state_dict().items():
        assert torch.equal(value, checkpoint["state_dict"][name]), name
    datamodule = MedicalPretrainDataModule(root=str(sample_root), batch_size=4)
    batch = next(iter(datamodule.loader("test")))
    with torch.no_grad():
        first = system.compute_losses(batch, "val")
        again = load_system(pretrained).compute_losses(batch, "val")
    assert torch.equal(first["loss"], again["loss"])


def test_itm_scores_drive_zero_shot_classification(pretrained, sample_root):
    system = load_system(pretrained)
    encoder = system.encoder()
    path = sample_root / "images" / "SYN_0000.dcm"
    image = encoder.load_image(path)
    assert image.shape == (3, 64, 64)
    classes, templates = ["chest", "brain"], ["a CT of the {}.", "a radiograph of the {}."]
    logits = ZeroShotClassifier(encoder).logits([path], classes, templates)
    texts = [template.format(name) for name in classes for template in templates]
    by_hand = system.itm_scores(image[None], texts).reshape(1, 2, 2).mean(dim=2)
    assert torch.allclose(logits, by_hand, atol=1e-5)
    assert encoder.encode_images(image[None]).shape == encoder.encode_texts(["x"]).shape == (1, 64)


def test_vqa_fit_starts_from_the_pretrained_backbone(pretrained, sample_root, tmp_path):
    pretrained_state = torch.load(pretrained, map_location="cpu", weights_only=True)["state_dict"]
    system = M3AEVQASystem(classes=["yes", "no"], init_from=str(pretrained))
    system.load_backbone(str(pretrained))
    for name, value in system.backbone.state_dict().items():
        assert torch.equal(value, pretrained_state[f"backbone.{name}"]), name

    checkpoint = fit_briefly(
        CONFIGS / "medical" / "tiny_vqa.yaml",
        tmp_path,
        {"root": str(sample_root), "batch_size": 8},
        {"init_from": str(pretrained)},
    )
    tuned = load_system(checkpoint)
    datamodule = MedicalVQADataModule(root=str(sample_root), batch_size=4)
    assert tuned.hparams.classes == datamodule.classes()
    batch = next(iter(datamodule.loader("test")))
    with torch.no_grad():
        logits = tuned(batch["image"], batch["question"])
    assert logits.shape == (4, len(datamodule.classes()))
    answers = tuned.answer(batch["image"], batch["question"])
    assert answers == [datamodule.classes()[i] for i in logits.argmax(-1).tolist()]
    metrics = (tmp_path / "runs/medical/tiny_vqa/logs/version_0/metrics.csv").read_text()
    assert "val/vqa_overall_acc" in metrics and "val/vqa_closed_acc" in metrics


def test_init_from_refuses_a_different_backbone(pretrained):
    wider = M3AEVQASystem(classes=["yes"], hidden=48)
    with pytest.raises(CheckpointError, match="hidden=64"):
        wider.load_backbone(str(pretrained))
    deeper = M3AEVQASystem(classes=["yes"], vision_depth=2)
    with pytest.raises(CheckpointError, match="does not fit this backbone"):
        deeper.load_backbone(str(pretrained))


def test_vqa_items_vocabulary_and_majority_baseline(sample_root):
    datamodule = MedicalVQADataModule(root=str(sample_root), batch_size=4)
    train, test = datamodule.items("train"), datamodule.items("test")
    counts = Counter(normalize_answer(item.answer) for item in train)
    classes = datamodule.classes()
    assert set(classes) == set(counts) and counts[classes[0]] == max(counts.values())
    dataset = datamodule.build_dataset("test")
    assert len(dataset) == len(test) and datamodule.items("val") == test
    item = dataset[0]
    assert item["image"].shape == (3, 64, 64)
    assert classes[item["answer_index"]] == normalize_answer(test[0].answer)
    assert item["answer_type"] in ("open", "closed")
    dataset.answer_index.pop(normalize_answer(test[0].answer))
    assert dataset[0]["answer_index"] == -1

    majority = classes[0]
    closed = [item for item in test if item.answer_type == "closed"]
    baseline = datamodule.majority_baseline("test")
    assert baseline["overall"] == pytest.approx(
        sum(normalize_answer(item.answer) == majority for item in test) / len(test)
    )
    assert baseline["closed"] == pytest.approx(
        sum(normalize_answer(item.answer) == majority for item in closed) / len(closed)
    )


def test_pretraining_pairs_and_a_missing_image(sample_root, tmp_path):
    datamodule = MedicalPretrainDataModule(root=str(sample_root))
    train = datamodule.build_dataset("train")
    assert len(train) == 29 and len(datamodule.build_dataset("val")) == 7  # val = test split
    item = train[0]
    assert item["image"].shape == (3, 64, 64) and isinstance(item["text"], str)
    broken = tmp_path / "broken"
    (broken / "train").mkdir(parents=True)
    (broken / "images").mkdir()
    (broken / "train" / "captions.txt").write_text("ROCO_00001\tA chest radiograph.\n")
    with pytest.raises(AnnotationError, match="captions.txt.*no image for ID 'ROCO_00001'"):
        MedicalPretrainDataModule(root=str(broken)).build_dataset("train")


def test_roco_release_layout_through_dlinks(sample_root, tmp_path):
    """ROCO names images <PMC id>_<figure file>, listed in dlinks.txt beside captions.txt."""
    folder = tmp_path / "roco" / "validation" / "radiology"
    (folder / "images").mkdir(parents=True)
    source = sample_root / "images" / "SYN_0001.dcm"
    (folder / "images" / "PMC123_fig-1.dcm").write_bytes(source.read_bytes())
    (folder / "captions.txt").write_text("ROCO_00007\tCT of the chest.\n")
    link = "wget -nd ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/00/00/PMC123.tar.gz"
    (folder / "dlinks.txt").write_text(f"ROCO_00007\t {link}\tfig-1.dcm\n")
    dataset = MedicalPretrainDataModule(root=str(tmp_path / "roco")).build_dataset("val")
    assert dataset.pairs == [(folder / "images" / "PMC123_fig-1.dcm", "CT of the chest.")]
    (folder / "dlinks.txt").write_text("ROCO_00007 no tabs here\n")
    with pytest.raises(AnnotationError, match="dlinks.txt: line 1"):
        MedicalPretrainDataModule(root=str(tmp_path / "roco")).build_dataset("val")


def test_report_retrieval_reranks_a_shortlist_with_itm(pretrained, sample_root):
    system = load_system(pretrained)
    datamodule = MedicalPretrainDataModule(root=str(sample_root))
    test = datamodule.build_dataset("test")
    reports = sorted({text for _, text in test.pairs})  # distinct: no ties in either ranking
    knowledge_base = system.report_knowledge_base(
        reports, [{"text": r, "i": i} for i, r in enumerate(reports)]
    )
    images = torch.stack([test[i]["image"] for i in range(3)])
    exhaustive = system.itm_scores(images, reports)
    full = system.retrieve_reports(images, knowledge_base, k=3, shortlist=len(reports))
    for row, hits in enumerate(full):
        assert [hit.record["i"] for hit in hits] == exhaustive[row].argsort(descending=True)[
            :3
        ].tolist()
        assert [hit.score for hit in hits] == pytest.approx(
            exhaustive[row].sort(descending=True).values[:3].tolist(), abs=1e-5
        )
    encoder = system.encoder()
    embedding_order = (encoder.encode_images(images) @ encoder.encode_texts(reports).T).argsort(
        dim=1, descending=True
    )
    short = system.retrieve_reports(images, knowledge_base, k=2, shortlist=3)
    for row, hits in enumerate(short):
        assert {hit.record["i"] for hit in hits} <= set(embedding_order[row, :3].tolist())
        assert hits[0].score >= hits[1].score
