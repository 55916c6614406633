"""``kb build --overwrite``, ``kb add``, ``kb delete``, ``kb reembed`` and filters that cannot match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.service import create_app
from domainvlm.retrieval_db import KnowledgeBase
from fastapi.testclient import TestClient

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem

ITEMS = [
    {"text": "red roof", "year": 2020, "tags": ["a"]},
    {"text": "green forest", "year": 2021, "tags": ["b"]},
    {"text": "blue lake", "year": 2022, "tags": ["c"]},
]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


def build(capsys, tmp_path: Path, checkpoint: Path, rows: list[dict], *options: str) -> tuple:
    items = jsonl(tmp_path / "items.jsonl", rows)
    return run_cli(
        capsys, "kb", "build", "--jsonl", items, "--checkpoint", checkpoint,
        "--out", tmp_path / "kb", *options,
    )  # fmt: skip


def texts(kb: Path) -> list[str]:
    base = KnowledgeBase.load(kb)
    return [record["text"] for record in base.get(base.ids().tolist())]


def test_build_refuses_to_replace_an_existing_base_unless_overwrite(
    tmp_path: Path, checkpoint: Path, capsys
):
    assert build(capsys, tmp_path, checkpoint, ITEMS)[0] == 0
    code, _, err = build(capsys, tmp_path, checkpoint, ITEMS[:1])
    assert code == 1 and "already holds a knowledge base" in err and "--overwrite" in err
    assert len(texts(tmp_path / "kb")) == 3  # nothing lost
    code, _, err = build(capsys, tmp_path, checkpoint, ITEMS[:1], "--overwrite")
    assert code == 0, err
    assert texts(tmp_path / "kb") == ["red roof"]

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--checkpoint", checkpoint,
        "--out", tmp_path / "other",
    )  # fmt: skip
    assert code == 1 and "not empty" in err
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_add_then_delete_by_id_and_by_filter(tmp_path: Path, checkpoint: Path, capsys):
    assert build(capsys, tmp_path, checkpoint, ITEMS)[0] == 0
    kb = tmp_path / "kb"
    more = jsonl(tmp_path / "more.jsonl", [{"text": "red brick", "year": 2023}])
    code, lines, err = run_cli(capsys, "kb", "add", kb, "--jsonl", more)
    assert code == 0, err
    assert json.loads(lines[0]) | {"index": None} == {
        "added": 1, "first_id": 3, "last_id": 3, "count": 4, "index": None,
    }  # fmt: skip
    code, lines, _ = run_cli(capsys, "kb", "search", kb, "--text", "red", "-k", "2")
    assert {json.loads(line)["record"]["text"] for line in lines} == {"red roof", "red brick"}

    code, lines, err = run_cli(capsys, "kb", "delete", kb, "--id", "0")
    assert code == 0 and json.loads(lines[0])["deleted"] == 1, err
    code, _, err = run_cli(capsys, "kb", "delete", kb, "--id", "0")
    assert code == 1 and "no item with id 0" in err
    code, lines, err = run_cli(capsys, "kb", "delete", kb, "--filter", "year=2021")
    assert code == 0 and json.loads(lines[0]) | {"index": None} == {
        "deleted": 1, "count": 2, "index": None,
    }, err  # fmt: skip
    assert texts(kb) == ["blue lake", "red brick"]


def test_reembed_moves_a_base_to_a_retrained_encoder(tmp_path: Path, checkpoint: Path, capsys):
    colour_png(tmp_path / "tiles" / "red.png", (230, 20, 10))
    rows = [*ITEMS, {"image": "tiles/red.png", "kind": "tile"}]
    jsonl(tmp_path / "tiles.jsonl", rows)
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "tiles.jsonl", "--checkpoint", checkpoint,
        "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 0, err
    retrained = ColourSystem()
    with torch.no_grad():
        retrained.mix.weight.mul_(2.0)  # same space, different weights: a "retrain"
    new = save_checkpoint(retrained, tmp_path / "retrained.ckpt")
    code, _, err = run_cli(
        capsys, "kb", "search", tmp_path / "kb", "--text", "red", "--checkpoint", new
    )
    assert code == 1 and "was built with encoder" in err

    code, _, err = run_cli(capsys, "kb", "reembed", tmp_path / "kb", "--checkpoint", new)
    assert code == 1 and "--image-root" in err
    code, lines, err = run_cli(
        capsys, "kb", "reembed", tmp_path / "kb", "--checkpoint", new, "--image-root", tmp_path
    )
    assert code == 0 and json.loads(lines[0])["count"] == 4, err
    code, lines, err = run_cli(
        capsys, "kb", "search", tmp_path / "kb", "--text", "red", "-k", "1", "--checkpoint", new,
        "--filter", "kind=tile",
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["record"]["image"] == "tiles/red.png", err
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["encoder"]["sha256"] == load_encoder(str(new)).identity()["sha256"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("yeer=2021", "no record has a field 'yeer'; the fields are: tags, text, year"),
        ("tags=a", "field 'tags' holds array values"),
        ("year>=2021", "operator '>=' is not supported"),
        ("year<2021", "operator '<' is not supported"),
        ("text!=red roof", "operator '!=' is not supported"),
    ],
)
def test_a_filter_that_cannot_match_is_refused(
    tmp_path: Path, checkpoint: Path, capsys, flag: str, message: str
):
    assert build(capsys, tmp_path, checkpoint, ITEMS)[0] == 0
    code, lines, err = run_cli(
        capsys, "kb", "search", tmp_path / "kb", "--text", "red", "--filter", flag
    )
    assert code == 1 and message in err and not lines


def test_a_valid_filter_matching_nothing_warns(tmp_path: Path, checkpoint: Path, capsys):
    assert build(capsys, tmp_path, checkpoint, ITEMS)[0] == 0
    code, lines, err = run_cli(
        capsys, "kb", "search", tmp_path / "kb", "--text", "red", "--filter", "year=1999"
    )
    assert code == 0 and not lines and "no item matches year=1999" in err


def test_the_service_refuses_an_unknown_filter_field(checkpoint: Path):
    encoder = load_encoder(str(checkpoint))
    vectors = encoder.encode_texts([row["text"] for row in ITEMS]).numpy()
    kb = KnowledgeBase.from_vectors(vectors, ITEMS, encoder=encoder.identity())
    client = TestClient(create_app(encoder, {"kb": kb}))
    response = client.post("/v1/search", data={"kb": "kb", "text": "red", "filter": "colour=red"})
    assert response.status_code == 422
    assert "no record has a field 'colour'" in response.json()["error"]
