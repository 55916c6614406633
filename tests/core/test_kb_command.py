"""``domainvlm kb``: encoder identity across copied checkpoints, and the recall a build records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.registry import load_domains
from domainvlm.core.service import create_app
from domainvlm.retrieval_db import KnowledgeBase
from fastapi.testclient import TestClient

from tests.helpers import colour_png, register_plugin, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem


@pytest.fixture
def colours_domain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    yield register_plugin(tmp_path, monkeypatch, "colours", "tests.plugins.colours:PLUGIN")
    load_domains.cache_clear()


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return save_checkpoint(ColourSystem(), tmp_path / "run" / "colour.ckpt")


def build_from_jsonl(capsys, tmp_path: Path, checkpoint: Path, *options: str | Path) -> Path:
    rows = [{"text": "red roof"}, {"text": "green forest"}, {"text": "blue lake"}]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "kb"
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--checkpoint", checkpoint,
        "--out", out, *options,
    )  # fmt: skip
    assert code == 0, err
    return out


def test_a_copied_checkpoint_searches_the_knowledge_base_of_the_original(
    tmp_path: Path, checkpoint: Path, capsys
):
    kb = build_from_jsonl(capsys, tmp_path, checkpoint)
    copy = tmp_path / "elsewhere" / "moved.ckpt"
    copy.parent.mkdir()
    shutil.copy(checkpoint, copy)
    checkpoint.unlink()  # the original is gone: only the copy is left, as on another machine

    code, lines, err = run_cli(
        capsys, "kb", "search", kb, "--text", "blue", "-k", "1", "--checkpoint", copy
    )
    assert code == 0, err
    assert json.loads(lines[0])["record"]["text"] == "blue lake"
    manifest = json.loads((kb / "manifest.json").read_text())
    assert manifest["encoder"] == {
        "name": str(checkpoint.resolve()),  # provenance: where the vectors came from
        "sha256": load_encoder(str(copy)).identity()["sha256"],
    }
    # Without --checkpoint the recorded path is tried, and its absence is explained.
    code, _, err = run_cli(capsys, "kb", "search", kb, "--text", "blue")
    assert code == 1 and "cannot rebuild" in err and "--checkpoint" in err


def test_a_changed_weight_is_refused(tmp_path: Path, checkpoint: Path, capsys):
    kb = build_from_jsonl(capsys, tmp_path, checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    state["state_dict"]["mix.weight"][0, 0] += 1e-3
    changed = tmp_path / "changed.ckpt"
    torch.save(state, changed)
    code, _, err = run_cli(capsys, "kb", "search", kb, "--text", "blue", "--checkpoint", changed)
    assert code == 1 and "was built with encoder" in err and "--allow-encoder-mismatch" in err


def test_identity_hashes_weights_and_preprocessing_not_paths(tmp_path: Path, checkpoint: Path):
    copy = shutil.copy(checkpoint, tmp_path / "copy.ckpt")
    original, copied = load_encoder(str(checkpoint)), load_encoder(str(copy))
    assert original.name != copied.name
    assert original.identity()["sha256"] == copied.identity()["sha256"]
    copied.preprocessing = {"image_size": 16}
    assert original.identity()["sha256"] != copied.identity()["sha256"]


def test_health_shows_the_identity_not_the_server_path(tmp_path: Path, checkpoint: Path):
    encoder = load_encoder(str(checkpoint))
    vectors = encoder.encode_texts(["red roof"]).numpy()
    kb = KnowledgeBase.from_vectors(vectors, [{"text": "red roof"}], encoder=encoder.identity())
    body = TestClient(create_app(encoder, {"kb": kb})).get("/v1/health").json()
    assert body["encoder"] == {"sha256": encoder.identity()["sha256"]}
    assert str(tmp_path) not in json.dumps(body)


def summary_and_manifest(lines: list[str], kb: Path) -> tuple[dict, dict]:
    return json.loads(lines[0]), json.loads((kb / "manifest.json").read_text())


def test_recall_is_measured_with_the_given_queries_and_says_which(
    tmp_path: Path, checkpoint: Path, capsys
):
    for colour, rgb in {"red": (230, 20, 10), "blue": (15, 30, 220)}.items():
        colour_png(tmp_path / "queries" / f"{colour}.png", rgb)
    lines = ['{"image": "queries/red.png"}', '{"image": "queries/blue.png"}']
    (tmp_path / "queries.jsonl").write_text("\n".join(lines))
    build_from_jsonl(capsys, tmp_path, checkpoint, "--recall-queries", tmp_path / "queries.jsonl")
    recall = json.loads((tmp_path / "kb" / "manifest.json").read_text())["recall"]
    assert (recall["query_kind"], recall["queries"], recall["value"]) == ("image", 1, 1.0)

    shutil.rmtree(tmp_path / "kb")
    build_from_jsonl(capsys, tmp_path, checkpoint)  # no queries: stored vectors stand in
    recall = json.loads((tmp_path / "kb" / "manifest.json").read_text())["recall"]
    assert recall["query_kind"] == "stored"

    (tmp_path / "mixed.jsonl").write_text('{"image": "queries/red.png"}\n{"text": "red"}\n')
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--checkpoint", checkpoint,
        "--out", tmp_path / "kb2", "--recall-queries", tmp_path / "mixed.jsonl",
    )  # fmt: skip
    assert code == 1 and "all texts or all images" in err and not (tmp_path / "kb2").exists()


def test_a_domain_supplies_its_own_recall_queries(
    tmp_path: Path, checkpoint: Path, capsys, colours_domain
):
    out = tmp_path / "kb"
    code, lines, err = run_cli(
        capsys, "kb", "build", "--domain", "colours", "--checkpoint", checkpoint, "--out", out
    )
    assert code == 0, err
    summary = json.loads(lines[0])
    assert (summary["recall_queries"], summary["recall"]) == ("text", 1.0)
    assert json.loads((out / "manifest.json").read_text())["recall"]["queries"] == 1
