"""The comics tasks through the CLI a user runs: closure, retrieval, tagging, knowledge base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from domainvlm.domains.comics.books import load_books

from tests.helpers import CONFIGS, run_cli


def test_sample_data_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run_cli(
        capsys, "sample-data", "comics", "--out", tmp_path / "s", "--size", "small"
    )
    assert code == 0 and "comics" in out[0]
    assert (tmp_path / "s/manga109/books.txt").is_file()
    assert (tmp_path / "s/comix/annotations/comix_sample.json").is_file()
    assert (tmp_path / "s/comics/folds/text_cloze_test_hard.csv").is_file()
    assert (tmp_path / "s/comicspap/records.json").is_file()


def test_eval_closure_every_task(
    checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run_cli(
        capsys, "eval", "closure", "--checkpoint", checkpoint, "--data", sample_root
    )
    assert code == 0
    rows = json.loads(out[0])["results"]
    found = {(r["benchmark"], r["task"], r["fold"]) for r in rows}
    assert ("comics", "text_cloze", "test_hard") in found
    assert ("comics", "char_coherence", "test_easy") in found
    assert ("comicspap", "sequence_filling", "test") in found and len(found) == 10
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["num_samples"] > 0
        expected = 0.5 if row["task"] == "char_coherence" else 1 / 3  # two options in both
        assert row["random"] == pytest.approx(expected)


def test_eval_closure_table_and_config(
    checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    config = CONFIGS / "comics/eval/comics.yaml"
    code, out, _ = run_cli(
        capsys,
        "eval",
        "closure",
        "--config",
        config,
        "--checkpoint",
        checkpoint,
        "--data",
        sample_root,
    )
    assert code == 0
    assert out[0] == "closure accuracy (percent)"
    assert "text_cloze easy" in out[1] and "char_coherence easy" in out[1]
    assert out[3].split()[:1] == ["random"] and "33.3" in out[3] and "50.0" in out[3]
    assert any(line.startswith("published image+text") and "68.6" in line for line in out)
    assert not any(line.startswith("ComicsPAP") for line in out)  # benchmark: comics
    code, out, _ = run_cli(
        capsys,
        "eval",
        "closure",
        "--checkpoint",
        checkpoint,
        "--data",
        sample_root,
        "--task",
        "char_coherence",
        "--benchmark",
        "comicspap",
        "--table",
    )
    assert code == 0 and out[1].split() == ["ComicsPAP", "char_coherence"]
    # the same records as the Hugging Face release stores them: same count, same accuracy
    code, parquet, _ = run_cli(
        capsys,
        "eval",
        "closure",
        "--checkpoint",
        checkpoint,
        "--data",
        sample_root / "comicspap_parquet",
        "--task",
        "char_coherence",
        "--table",
    )
    assert code == 0 and parquet[1:] == out[1:]


def test_eval_retrieval_pairs_held_out_panels(
    checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", checkpoint, "--data", sample_root
    )
    assert code == 0
    result = json.loads(out[0])
    panels = sum(len(b.panels()) for b in load_books(sample_root, "test"))
    assert result["num_images"] == result["num_texts"] == panels
    assert 0.0 <= result["mean_recall"] <= 1.0


def test_zeroshot_tags_panels_and_pages(
    checkpoint: Path, sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    code, out, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", sample_root
    )
    assert code == 0
    result = json.loads(out[0])
    tags = [
        line.rsplit(",", 1)[1] for line in (sample_root / "panel_tags.csv").read_text().split()[1:]
    ]
    assert result["num_classes"] == len(set(tags)) >= 2
    assert result["num_samples"] == sum(len(b.panels()) for b in load_books(sample_root, "test"))
    page = next((sample_root / "manga109/images").rglob("000.jpg"))
    code, out, _ = run_cli(
        capsys,
        "zeroshot",
        "--checkpoint",
        checkpoint,
        "--classes",
        "forest,beach,city,snow",
        str(page),
        f"{page}#xywh=8,8,100,95",
    )
    assert code == 0 and len(out) == 2
    assert {json.loads(line)["label"] for line in out} <= {"forest", "beach", "city", "snow"}


def test_knowledge_base_text_and_character_search(
    checkpoint: Path, sample_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    kb = tmp_path / "kb"
    code, out, _ = run_cli(
        capsys,
        "kb",
        "build",
        "--domain",
        "comics",
        "--data",
        sample_root,
        "--checkpoint",
        checkpoint,
        "--out",
        kb,
    )
    assert code == 0
    books = load_books(sample_root)
    panels = sum(len(b.panels()) for b in books)
    characters = sum(
        len([c for c in p.characters if c.part == "body"]) for b in books for _, p in b.panels()
    )
    assert json.loads(out[0])["count"] == panels + characters
    code, out, _ = run_cli(
        capsys,
        "kb",
        "search",
        kb,
        "--text",
        "Yes Ada, the apple is in the forest.",
        "-k",
        "3",
        "--filter",
        "kind=panel",
        "--checkpoint",
        checkpoint,
    )
    hits = [json.loads(line) for line in out]
    assert code == 0 and len(hits) == 3
    assert {"book", "page", "panel_box", "dialogue"} <= set(hits[0]["record"])
    assert hits[0]["record"]["kind"] == "panel"
    page, panel = books[0].panels()[0]
    crop = f"{page.image}#xywh=" + ",".join(
        str(int(v))
        for v in (
            panel.characters[1].box[0],
            panel.characters[1].box[1],
            panel.characters[1].box[2] - panel.characters[1].box[0],
            panel.characters[1].box[3] - panel.characters[1].box[1],
        )
    )
    code, out, _ = run_cli(
        capsys,
        "kb",
        "search",
        kb,
        "--image",
        crop,
        "-k",
        "2",
        "--filter",
        "kind=character",
        "--checkpoint",
        checkpoint,
    )
    hits = [json.loads(line) for line in out]
    assert code == 0 and all(h["record"]["kind"] == "character" for h in hits)


def test_character_queries_name_held_out_crops(
    sample_root: Path, capsys: pytest.CaptureFixture
) -> None:
    from domainvlm.domains.comics.character_queries import main
    from domainvlm.domains.comics.pages import read_crop

    assert main([str(sample_root)]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    names = [name for name, _ in lines]
    assert len(names) == len(set(names)) >= 2 and set(names) <= {
        "Ada",
        "Bo",
        "Cy",
        "Dee",
        "Eli",
        "Fay",
    }
    assert all(read_crop(address).shape[2] == 3 for _, address in lines)
