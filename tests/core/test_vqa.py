"""``domainvlm eval vqa``: accuracy per answer type beside the majority answer, for any domain
whose plugin reads questions and asks its systems (here the colours test domain)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from domainvlm.core.vqa import VQAEvaluationError, format_vqa_table, vqa_accuracy

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem, hook_calls

RED, GREEN, BLUE = (230, 20, 10), (20, 210, 40), (15, 30, 220)


def test_accuracy_overall_and_per_type_by_hand():
    predicted = ["yes", "no", "2", "lung", "no"]
    answers = ["yes", "yes", "2", "liver", "no"]
    types = ["closed", "closed", "open", "open", ""]
    assert vqa_accuracy(predicted, answers, types) == {
        "overall": 3 / 5,
        "closed": 1 / 2,
        "open": 1 / 2,
    }
    with pytest.raises(VQAEvaluationError, match="as many predictions as answers"):
        vqa_accuracy(["yes"], ["yes", "no"], ["closed", "closed"])
    with pytest.raises(VQAEvaluationError, match="at least one"):
        vqa_accuracy([], [], [])


@pytest.fixture
def tiles(tmp_path: Path) -> Path:
    """Four tiles named by their colour and one red tile named green (a wrong label)."""
    root = tmp_path / "tiles"
    for name, rgb in [("red_0", RED), ("red_1", RED), ("green_0", GREEN), ("blue_0", BLUE)]:
        colour_png(root / "test" / f"{name}.png", rgb)
    colour_png(root / "test" / "green_9.png", RED, seed=3)
    return root


def test_eval_vqa_scores_the_answers_and_the_majority_answer(
    tmp_path: Path, tiles: Path, capsys, colours_domain
):
    checkpoint = save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")
    code, lines, err = run_cli(capsys, "eval", "vqa", "--checkpoint", checkpoint, "--data", tiles)
    assert code == 0, err
    assert hook_calls == [("vqa", tiles, "test")]
    result = json.loads(lines[0])
    # green_9 is red: its colour answer is "red" (wrong) and "is this tile red?" gets "yes" (wrong).
    assert result["accuracy"] == {"overall": 0.8, "colour": 0.8, "yes/no": 0.8}
    # "no" answers none of the colour questions and three of the five red questions.
    assert result["majority_answer"] == "no"
    assert result["majority_accuracy"] == {"overall": 0.3, "colour": 0.0, "yes/no": 0.6}
    assert (result["domain"], result["split"], result["num_questions"]) == ("colours", "test", 10)

    config = tmp_path / "vqa.yaml"
    config.write_text(f"checkpoint: {checkpoint}\ndata: {tiles}\ntable: true\nbatch_size: 2\n")
    code, lines, _ = run_cli(capsys, "eval", "vqa", "--config", config)
    assert code == 0
    assert lines[0] == "vqa accuracy (percent), test split, 10 questions"
    assert [line.split()[-3:] for line in lines[1:]] == [
        ["overall", "colour", "yes/no"],
        ["80.0", "80.0", "80.0"],
        ["30.0", "0.0", "60.0"],
    ]
    assert lines[2].startswith("model ") and lines[3].startswith("majority answer 'no' ")


def test_eval_vqa_needs_a_domain_that_answers(tmp_path: Path, tiles: Path, capsys):
    checkpoint = save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")
    code, _, err = run_cli(capsys, "eval", "vqa", "--checkpoint", checkpoint, "--data", tiles)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "vqa_data and answer_questions hooks" in err and "Pass --domain" in err


def test_table_shows_a_dash_for_a_type_the_baseline_never_met():
    table = format_vqa_table(
        {
            "split": "test",
            "num_questions": 4,
            "accuracy": {"overall": 0.5, "open": 0.25, "closed": 0.75},
            "majority_answer": "yes",
            "majority_accuracy": {"overall": 0.5},
        }
    )
    assert [line.split() for line in table.splitlines()[1:]] == [
        ["overall", "open", "closed"],
        ["model", "50.0", "25.0", "75.0"],
        ["majority", "answer", "'yes'", "50.0", "-", "-"],
    ]
