"""``eval zeroshot`` scores what the user meant: split lists honoured, one class refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from domainvlm.core.registry import ZeroShotData

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import PLUGIN, ColourSystem

RED, GREEN, BLUE = (230, 20, 10), (20, 210, 40), (15, 30, 220)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")


def listed_class_folders(root: Path) -> Path:
    """Each class: two right-coloured test tiles and two wrong-coloured training tiles."""
    wrong = {"red": BLUE, "green": RED, "blue": GREEN}
    right = {"red": RED, "green": GREEN, "blue": BLUE}
    train, test = [], []
    for name in right:
        for i in range(2):
            colour_png(root / name / f"test_{i}.png", right[name], seed=i)
            colour_png(root / name / f"train_{i}.png", wrong[name], seed=i)
            test.append(f"{name}/test_{i}.png")
            train.append(f"train_{i}.png" if name == "red" else f"{name}/train_{i}")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    (root / "train.txt").write_text("\n".join(f"{n}/train_0.png" for n in right) + "\n")
    return root


def evaluate(capsys, checkpoint: Path, data: Path, *options: str) -> tuple[int, dict, str]:
    code, lines, err = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", data, *options
    )
    return code, json.loads(lines[0]) if lines else {}, err


def test_class_folders_honour_the_split_lists(tmp_path: Path, checkpoint: Path, capsys):
    data = listed_class_folders(tmp_path / "data")
    code, result, err = evaluate(capsys, checkpoint, data)
    assert code == 0, err
    # Only the 6 listed test tiles, all right; the wrong-coloured training tiles are not scored.
    assert (result["num_samples"], result["acc1"]) == (6, 1.0)
    assert result["split"] == "test (list test.txt)"
    code, result, err = evaluate(capsys, checkpoint, data, "--split", "train")
    assert (result["num_samples"], result["acc1"], result["split"]) == (
        3, 0.0, "train (list train.txt)",
    )  # fmt: skip

    code, _, err = evaluate(capsys, checkpoint, data, "--split", "val")
    assert code == 1 and "no val.txt" in err and "--split train or --split test" in err
    (data / "test.txt").write_text("red/test_0.png\nred/missing.png\n")
    code, _, err = evaluate(capsys, checkpoint, data)
    assert code == 1 and "test.txt" in err and "red/missing.png" in err


def test_without_lists_every_image_is_scored_and_said_so(tmp_path: Path, checkpoint: Path, capsys):
    for name, rgb in {"red": RED, "blue": BLUE}.items():
        colour_png(tmp_path / "data" / name / "0.png", rgb)
    code, result, err = evaluate(capsys, checkpoint, tmp_path / "data")
    assert code == 0, err
    assert result["num_samples"] == 2
    assert result["split"] == "all images (no test/ folder or test.txt list)"


def test_one_class_is_an_error_that_says_what_is_expected(
    tmp_path: Path, checkpoint: Path, capsys, monkeypatch: pytest.MonkeyPatch
):
    from domainvlm.core.commands import evaluate as evaluate_command

    # A domain whose reader finds one class (as a caption root read as scenes did).
    one_class = dataclasses.replace(
        PLUGIN, zeroshot_data=lambda root, split, lang: ZeroShotData([root], [0], ["red"], ["{}"])
    )
    monkeypatch.setattr(evaluate_command, "resolve_domain", lambda name, module: one_class)
    code, _, err = evaluate(capsys, checkpoint, tmp_path)
    assert code == 1
    assert "gives 1 class ('red')" in err and "at least two classes" in err
    assert "eval retrieval" in err
