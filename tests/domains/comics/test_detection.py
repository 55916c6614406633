"""Page detection: targets from the sample, box arithmetic, COCO metrics by hand, weights files,
checkpoints, and a short fit + eval through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from domainvlm.core.errors import CheckpointError, DomainVLMError
from domainvlm.domains.comics.books import load_books
from domainvlm.domains.comics.detection import (
    DETECTION_CLASSES,
    Detection,
    DetectionError,
    PageDetector,
    corners_to_xywh,
    one_label_per_object,
    resize_page,
    resized_size,
    scale_boxes,
    xywh_to_corners,
)
from domainvlm.domains.comics.detection_data import (
    PageDetectionDataset,
    PageTargets,
    detection_pages,
)
from domainvlm.domains.comics.detection_metrics import (
    coco_ground_truth,
    coco_results,
    evaluate_detections,
    format_metrics,
)
from domainvlm.domains.comics.detection_model import PartialLabelHead, TinyBackbone
from domainvlm.domains.comics.detection_system import PageDetectionSystem
from PIL import Image
from torch import nn

from tests.helpers import CONFIGS, fit_briefly, run_cli, save_checkpoint

PANEL, CHARACTER, FACE, TEXT, BALLOON = range(5)


@pytest.fixture(scope="module")
def detector_checkpoint(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = {"root": str(sample_root), "batch_size": 2, "num_workers": 0, "max_side": 96}
    model = {"score_thresh": 0.0, "detections_per_page": 100}
    out = tmp_path_factory.mktemp("detector")
    return fit_briefly(CONFIGS / "comics" / "detector.yaml", out, data, model)


def _inside(inner, outer) -> bool:
    return (
        inner[0] >= outer[0]
        and inner[1] >= outer[1]
        and inner[2] <= outer[2]
        and inner[3] <= outer[3]
    )


def test_targets_from_the_written_sample(sample_root: Path) -> None:
    books = load_books(sample_root, "train")
    for book in books:
        for page in detection_pages([book]):
            counts = np.bincount(page.labels, minlength=5)
            panels = counts[PANEL]
            # every panel: two characters, their two faces, two texts
            assert panels > 0 and counts[CHARACTER] == counts[FACE] == counts[TEXT] == 2 * panels
            if book.source == "comix":
                assert page.annotated == DETECTION_CLASSES
                assert counts[BALLOON] == 2 * panels
                balloons = [b for b, lab in zip(page.boxes, page.labels) if lab == BALLOON]
                texts = [b for b, lab in zip(page.boxes, page.labels) if lab == TEXT]
                # a text is the region of words inside its balloon, never the balloon itself
                for text in texts:
                    assert any(_inside(text, b) and text != b for b in balloons)
            else:  # Manga109 has no balloon class: not annotated, so not "no balloons"
                assert page.annotated == ("panel", "character", "face", "text")
                assert counts[BALLOON] == 0


def test_box_conversions_by_hand() -> None:
    assert xywh_to_corners([10, 20, 30, 40]) == (10.0, 20.0, 40.0, 60.0)
    assert corners_to_xywh((10, 20, 40, 60)) == [10.0, 20.0, 30.0, 40.0]
    assert resized_size(240, 330, 320) == (233, 320)
    assert resized_size(1654, 1170, 1024) == (1024, 724)
    image, factors = resize_page(np.zeros((330, 240, 3), np.uint8), 320)
    assert image.shape == (320, 233, 3) and factors == (233 / 240, 320 / 330)
    model_box = scale_boxes(torch.tensor([[24.0, 33.0, 240.0, 330.0]]), factors)
    assert torch.allclose(model_box, torch.tensor([[23.3, 32.0, 233.0, 320.0]]))
    back = scale_boxes(model_box, (1 / factors[0], 1 / factors[1]))
    assert torch.allclose(back, torch.tensor([[24.0, 33.0, 240.0, 330.0]]))


class FixedBoxes(nn.Module):
    """Answers every page with one text box covering its right half, in model pixels."""

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        outputs = []
        for image in images:
            h, w = image.shape[-2:]
            outputs.append(
                {
                    "boxes": torch.tensor([[w / 2, 0.0, float(w), float(h)]]),
                    "labels": torch.tensor([TEXT]),
                    "scores": torch.tensor([0.26]),
                }
            )
        return outputs


def test_detections_come_back_in_page_pixels() -> None:
    detector = PageDetector(FixedBoxes(), max_side=320)
    (found,) = detector.detect(np.zeros((660, 480, 3), np.uint8))  # model sees 320 x 233
    assert found == Detection(
        "text", pytest.approx((240.0, 0.0, 480.0, 660.0)), pytest.approx(0.26)
    )
    assert detector.detect(np.zeros((660, 480), np.uint8))[0].box == found.box  # greyscale
    assert detector.detect(np.zeros((66, 48, 3), np.uint8), {"text": 0.3}) == []
    with pytest.raises(DetectionError, match="unknown classes"):
        detector.detect(np.zeros((66, 48, 3), np.uint8), {"speech": 0.3})
    with pytest.raises(DetectionError, match="uint8"):
        detector.detect(np.zeros((66, 48, 3), np.float32))


def test_one_label_per_object() -> None:
    body, face = [10.0, 10.0, 30.0, 60.0], [12.0, 10.0, 28.0, 26.0]
    output = {
        "boxes": torch.tensor([body, [10.0, 11.0, 30.0, 60.0], face]),
        "labels": torch.tensor([CHARACTER, FACE, FACE]),
        "scores": torch.tensor([0.9, 0.4, 0.8]),
    }
    kept = one_label_per_object(output)
    # the body labelled "face" too goes; the face inside its body (IoU 0.26) stays
    assert kept["labels"].tolist() == [CHARACTER, FACE]
    assert kept["boxes"].tolist() == [body, face]


def test_dataset_scales_and_flips_boxes(sample_root: Path) -> None:
    pages = detection_pages(load_books(sample_root, "val"))
    plain = PageDetectionDataset(pages, max_side=165)[0]  # sample pages are 240 x 330
    assert plain["image"].shape == (3, 165, 120)
    expected = torch.tensor(pages[0].boxes[0]) * torch.tensor([0.5, 0.5, 0.5, 0.5])
    assert torch.allclose(plain["boxes"][0], expected)
    plains = PageDetectionDataset(pages, max_side=165)
    flips = PageDetectionDataset(pages, max_side=165, train=True)
    torch.manual_seed(0)
    items = [(flips[i], plains[i]) for i in range(len(pages))]
    flipped = [(f, p) for f, p in items if not torch.equal(f["image"], p["image"])]
    assert flipped, "some page of the split is flipped"
    for item, original in flipped:
        assert torch.equal(item["image"], original["image"].flip(-1))
        assert torch.allclose(item["boxes"][:, 0], 120 - original["boxes"][:, 2])
        assert torch.allclose(item["boxes"][:, 2], 120 - original["boxes"][:, 0])


def _page(boxes, labels, annotated=DETECTION_CLASSES) -> PageTargets:
    return PageTargets(Path("page.jpg"), 400, 400, boxes, labels, annotated)


def test_coco_metrics_on_hand_built_predictions() -> None:
    pages = [
        _page([(0, 0, 100, 100), (200, 200, 260, 240)], [PANEL, TEXT]),
        _page([(10, 10, 110, 110)], [PANEL], annotated=("panel", "character", "face", "text")),
    ]
    truth = coco_ground_truth(pages)
    assert truth["annotations"][1]["bbox"] == [200.0, 200.0, 60.0, 40.0]
    assert truth["annotations"][1]["category_id"] == 4  # CoMix's text id
    perfect = [[(b, lab, 0.9) for b, lab in zip(p.boxes, p.labels)] for p in pages]
    result = evaluate_detections(truth, coco_results(perfect))
    panel = result["classes"]["panel"]
    assert panel == {
        "num_gt": 2,
        "num_pages": 2,
        "AP50": 1.0,
        "AP50-95": 1.0,
        "AR10": 1.0,
        "AR100": 1.0,
    }
    assert result["classes"]["character"]["AP50"] is None  # no boxes: no score, not zero
    # A panel shifted by 20 px: IoU 80*100 / 120*100 = 0.667, a hit at IoU 0.50, 0.55, 0.60
    # and 0.65 only: 4 of COCO's 10 thresholds.
    single = coco_ground_truth(pages[:1])
    result = evaluate_detections(single, coco_results([[((20, 0, 120, 100), PANEL, 0.9)]]))
    assert result["classes"]["panel"]["AP50"] == pytest.approx(1.0)
    assert result["classes"]["panel"]["AP50-95"] == pytest.approx(0.4)
    assert result["classes"]["text"]["AP50"] == 0.0 and result["classes"]["text"]["AR100"] == 0.0
    # A balloon on the page whose annotation has no balloon class is not a false positive.
    with_balloon = [
        _page([*pages[0].boxes, (300, 300, 350, 330)], [*pages[0].labels, BALLOON]),
        pages[1],
    ]
    truth = coco_ground_truth(with_balloon)
    found = [[((300, 300, 350, 330), BALLOON, 0.5)], [((0, 0, 50, 50), BALLOON, 0.9)]]
    balloon = evaluate_detections(truth, coco_results(found))["classes"]["balloon"]
    assert balloon["num_pages"] == 1 and balloon["AP50"] == pytest.approx(1.0)
    truth["images"][1]["annotated"].append("balloon")  # now the page says it has none
    balloon = evaluate_detections(truth, coco_results(found))["classes"]["balloon"]
    assert balloon["num_pages"] == 2 and balloon["AP50"] < 0.6
    table = format_metrics(evaluate_detections(truth, coco_results(perfect)))
    assert table.splitlines()[1].split() == ["panel", "2", "100.0", "100.0", "100.0", "100.0"]


def test_unannotated_classes_get_no_classification_gradient() -> None:
    head = PartialLabelHead(32, 1, len(DETECTION_CLASSES), 1)
    logits = torch.zeros(1, 6, len(DETECTION_CLASSES), requires_grad=True)
    outputs = {
        "cls_logits": logits,
        "bbox_regression": torch.zeros(1, 6, 4),
        "bbox_ctrness": torch.zeros(1, 6, 1),
    }
    anchors = [torch.tensor([[0.0, 0.0, 4.0, 4.0]] * 6)]
    matched = [torch.tensor([0, -1, -1, -1, -1, -1])]
    target = {"boxes": torch.tensor([[0.0, 0.0, 8.0, 8.0]]), "labels": torch.tensor([PANEL])}
    head.compute_loss([target], outputs, anchors, matched)["classification"].backward()
    assert logits.grad[0, :, BALLOON].abs().sum() > 0
    logits.grad = None
    ignore = torch.tensor([False, False, False, False, True])
    loss = head.compute_loss([{**target, "ignore": ignore}], outputs, anchors, matched)
    loss["classification"].backward()
    assert logits.grad[0, :, BALLOON].abs().sum() == 0
    assert logits.grad[0, :, TEXT].abs().sum() > 0


def test_pretrained_weights_from_local_files(tmp_path: Path) -> None:
    torch.manual_seed(1)
    backbone = TinyBackbone()
    torch.save(backbone.state_dict(), tmp_path / "backbone.pt")
    system = PageDetectionSystem(backbone_weights=str(tmp_path / "backbone.pt"))
    for name, value in backbone.state_dict().items():
        assert torch.equal(system.model.backbone.body.state_dict()[name], value)
    # a checkpoint carries the weights, not the file name
    checkpoint = save_checkpoint(system, tmp_path / "detector.ckpt")
    (tmp_path / "backbone.pt").unlink()
    detector = PageDetector.from_checkpoint(checkpoint)
    assert torch.equal(detector.model.backbone.body.stage1[0].weight, backbone.stage1[0].weight)
    # a whole detector's weights (a Lightning checkpoint: "model." prefixes)
    other = PageDetectionSystem(detector_weights=str(checkpoint))
    assert torch.equal(
        other.model.head.classification_head.cls_logits.weight,
        system.model.head.classification_head.cls_logits.weight,
    )
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="wrong.pt.*none of its tensors fits"):
        PageDetectionSystem(backbone_weights=str(tmp_path / "wrong.pt"))


def test_resnet_backbone_from_a_torchvision_state_dict(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(2)
    resnet = torchvision.models.resnet18(weights=None)  # what a downloaded ImageNet file holds
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pth")
    system = PageDetectionSystem(
        backbone="resnet18", backbone_weights=str(tmp_path / "resnet18.pth")
    )
    body = system.model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, resnet.layer3[0].conv1.weight)
    assert torch.equal(body.bn1.running_var, resnet.bn1.running_var)  # frozen, as loaded
    assert system.model.transform.image_mean == [0.485, 0.456, 0.406]
    detector = PageDetector.from_checkpoint(save_checkpoint(system, tmp_path / "r.ckpt"))
    assert torch.equal(detector.model.backbone.body.bn1.running_var, resnet.bn1.running_var)


def test_bad_checkpoints_are_clear_errors(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DomainVLMError, match="junk.ckpt"):
        PageDetector.from_checkpoint(tmp_path / "junk.ckpt")
    with pytest.raises(DomainVLMError, match="not a comics page detector"):
        PageDetector.from_checkpoint(checkpoint)  # the panel-text model's


def test_fit_then_eval_and_detect_through_the_cli(
    detector_checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results.json"
    code, lines, _ = run_cli(
        capsys,
        "eval",
        "detection",
        "--checkpoint",
        detector_checkpoint,
        "--data",
        sample_root,
        "--coco-results",
        results,
    )
    assert code == 0
    result = json.loads(lines[-1])
    assert result["num_pages"] == 4  # two held-out books of two pages
    for name, row in result["classes"].items():
        assert row["num_gt"] > 0, name
        assert all(0.0 <= row[m] <= 1.0 for m in ("AP50", "AP50-95", "AR10", "AR100"))
    written = json.loads(results.read_text())
    assert written and {r["category_id"] for r in written} <= {1, 2, 3, 4, 7}
    assert all(
        len(r["bbox"]) == 4 and set(r) == {"image_id", "category_id", "bbox", "score"}
        for r in written
    )
    detector = PageDetector.from_checkpoint(detector_checkpoint)
    assert detector.max_side == 96
    page = load_books(sample_root, "test")[0].pages[0]
    image = np.asarray(Image.open(page.image).convert("RGB"))
    found = detector.detect(image, dict.fromkeys(DETECTION_CLASSES, 0.0))
    assert found and {d.label for d in found} <= set(DETECTION_CLASSES)
    boxes = np.array([d.box for d in found])
    assert boxes[:, 2].max() <= 240 + 1e-3 and boxes[:, 3].max() <= 330 + 1e-3
    assert boxes[:, 3].max() > 96  # page pixels, not the model's 96-pixel side
    code, lines, _ = run_cli(
        capsys,
        "eval",
        "detection",
        "--checkpoint",
        detector_checkpoint,
        "--data",
        sample_root,
        "--table",
    )
    assert code == 0 and lines[1].split() == ["class", "boxes", "AP50", "AP50-95", "AR10", "AR100"]


def test_test_loop_reports_coco_ap(
    detector_checkpoint: Path,
    sample_root: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = detector_checkpoint.parents[4]  # the fit's working directory, with its config
    monkeypatch.chdir(run)
    code, lines, _ = run_cli(
        capsys,
        "test",
        "--config",
        run / "detector.yaml",
        "--ckpt_path",
        detector_checkpoint,
        "--data.root",
        sample_root,
    )
    assert code == 0
    assert any("test/AP50_panel" in line for line in lines)
