"""``domainvlm ask`` and ``POST /v1/vqa``: an answer and its probability, for any domain that answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from domainvlm.core.checkpoint import load_system
from domainvlm.core.commands.serve import question_answerer
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.service import create_app
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem

RED = (230, 20, 10)


def colour_probabilities(tile: Path) -> list[float]:
    """Softmax of the tile's mean colour (the colours system's joint space): red, green, blue."""
    mean = (np.asarray(Image.open(tile), dtype=np.float64) / 255).mean(axis=(0, 1)).tolist()
    total = sum(math.exp(value) for value in mean)
    return [math.exp(value) / total for value in mean]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")


def test_ask_prints_the_answer_with_its_probability(
    tmp_path: Path, checkpoint: Path, capsys, colours_domain
):
    tile = colour_png(tmp_path / "tile.png", RED)
    code, lines, err = run_cli(
        capsys, "ask", "--checkpoint", checkpoint, "--question", "what colour is it?",
        "--top-k", "2", tile,
    )  # fmt: skip
    assert code == 0, err
    row = json.loads(lines[0])
    red, green, blue = colour_probabilities(tile)
    assert (row["image"], row["question"], row["answer"]) == (
        str(tile),
        "what colour is it?",
        "red",
    )
    assert row["probability"] == pytest.approx(red, abs=1e-4)
    assert [a["answer"] for a in row["top_k"]] == ["red", "green"]
    assert row["top_k"][1]["probability"] == pytest.approx(green, abs=1e-4)

    code, _, err = run_cli(
        capsys, "ask", "--checkpoint", checkpoint, "--question", "q", "--frame", "2", tile
    )
    assert code == 1 and "frame 2 requested" in err


def test_ask_refuses_a_domain_that_does_not_answer(tmp_path: Path, checkpoint: Path, capsys):
    tile = colour_png(tmp_path / "tile.png", RED)
    code, _, err = run_cli(capsys, "ask", "--checkpoint", checkpoint, "--question", "q", tile)
    # Without the colours plugin installed, nothing claims the system's module.
    assert code == 1 and "does not answer questions" in err and "--domain" in err


def test_the_service_answers_questions_for_a_checkpoint_that_answers(
    tmp_path: Path, checkpoint: Path, colours_domain
):
    tile = colour_png(tmp_path / "tile.png", RED)
    answerer = question_answerer(load_system(checkpoint))
    client = TestClient(create_app(load_encoder(str(checkpoint)), answerer=answerer))
    with tile.open("rb") as handle:
        response = client.post(
            "/v1/vqa",
            files={"image": ("tile.png", handle, "image/png")},
            data={"question": "what colour?", "top_k": "1"},
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["question"], body["answer"]) == ("what colour?", "red")
    assert body["probability"] == pytest.approx(colour_probabilities(tile)[0], abs=1e-4)
    assert len(body["top_k"]) == 1

    with tile.open("rb") as handle:
        framed = client.post(
            "/v1/vqa",
            files={"image": ("tile.png", handle, "image/png")},
            data={"question": "what colour?", "frame": "2"},
        )
    assert framed.status_code == 400 and "frame 2 requested" in framed.json()["error"]

    bad = client.post(
        "/v1/vqa",
        files={"image": ("x.png", b"not a png", "image/png")},
        data={"question": "what colour?"},
    )
    assert bad.status_code == 400 and "'x.png' is not a readable image" in bad.json()["error"]
    # A checkpoint whose domain answers nothing serves no /v1/vqa.
    plain = TestClient(create_app(load_encoder(str(checkpoint))))
    assert plain.post("/v1/vqa", data={"question": "q"}).status_code == 404
