from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from domainvlm.domains.surgical.tasks import present_class_map

from tests.helpers import run_cli


def test_eval_phases_writes_a_per_video_table_timeline_and_confusion_matrix(
    pretrained: Path, sample_root: Path, tmp_path: Path, capsys
):
    timeline, matrix = tmp_path / "timeline.png", tmp_path / "cm.png"
    code, lines, _ = run_cli(
        capsys, "eval", "phases", "--checkpoint", pretrained, "--data", sample_root, "--table",
        "--timeline", timeline, "--confusion-matrix", matrix,
    )  # fmt: skip
    assert code == 0 and "SurgVLP protocol" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["video06", "video07", "mean"]
    assert timeline.stat().st_size > 1000 and matrix.stat().st_size > 1000
    code, lines, _ = run_cli(
        capsys, "eval", "phases", "--checkpoint", pretrained, "--data", sample_root
    )
    result = json.loads(lines[-1])
    means = np.mean([row["accuracy"] for row in result["per_group"].values()])
    assert result["mean_group_accuracy"] == pytest.approx(means) and result["chance"] == 1 / 7


def test_eval_tools_reports_tool_and_cholect50_map(pretrained: Path, sample_root: Path, capsys):
    code, lines, _ = run_cli(
        capsys, "eval", "tools", "--checkpoint", pretrained, "--data", sample_root
    )
    result = json.loads(lines[-1])
    assert code == 0 and set(result["tool_ap"]) >= {"Grasper", "Hook", "SpecimenBag"}
    assert result["tool_map"] == pytest.approx(np.mean(list(result["tool_ap"].values())))
    assert set(result["cholect50"]) == {"map_i", "map_v", "map_t", "map_ivt"}
    assert all(0.0 < value <= 1.0 for value in result["cholect50"].values())


def test_cholect50_map_skips_classes_absent_from_a_video():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.6, 0.4], [0.1, 0.7, 0.3]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])  # class 2 never present
    value, per_class = present_class_map(scores, targets)
    assert per_class == [1.0, 0.5] and value == 0.75


def test_linear_probe_separates_well_separated_features():
    import torch
    from domainvlm.domains.surgical.probe import fit_linear_probe

    torch.manual_seed(0)
    centres = torch.eye(3) * 4
    labels = torch.arange(3).repeat(20)
    features = centres[labels] + 0.5 * torch.randn(60, 3)
    probe = fit_linear_probe(features, labels, 3, 1e-3)
    assert (probe(features).argmax(dim=1) == labels).float().mean() > 0.95


def test_eval_probe_one_shot(pretrained: Path, sample_root: Path, capsys):
    code, lines, _ = run_cli(
        capsys, "eval", "probe", "--checkpoint", pretrained, "--data", sample_root, "--shots", "1"
    )
    result = json.loads(lines[-1])
    assert code == 0 and result["train_videos"] == 1 and result["num_groups"] == 2
    assert result["protocol"].startswith("linear probe") and 0 <= result["mean_group_accuracy"] <= 1
