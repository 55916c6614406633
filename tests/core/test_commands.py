from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.core.cli import main
from PIL import Image

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem, hook_calls

RED, GREEN, BLUE = (230, 20, 10), (20, 210, 40), (15, 30, 220)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")


def test_help_lists_the_new_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("zeroshot", "eval", "kb", "serve"):
        assert command in out


# ------------------------------------------------------------------------------------ zeroshot


def test_zeroshot_prints_one_json_line_per_image(tmp_path: Path, checkpoint: Path, capsys):
    images = [colour_png(tmp_path / "a.png", BLUE), colour_png(tmp_path / "b.png", RED, seed=1)]
    code, lines, _ = run_cli(
        capsys, "zeroshot", "--checkpoint", checkpoint, "--classes", "red, green,blue",
        "--top-k", "2", *images,
    )  # fmt: skip
    assert code == 0 and len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["image"] == str(images[0]) and first["label"] == "blue"
    assert second["label"] == "red" and second["probability"] > 0.9
    assert len(first["top_k"]) == 2 and first["top_k"][0]["label"] == "blue"


def test_zeroshot_reports_unreadable_images_and_fails(tmp_path: Path, checkpoint: Path, capsys):
    good = colour_png(tmp_path / "good.png", GREEN)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    (tmp_path / "t.json").write_text(json.dumps({"pt": ["um quadrado {}"]}))
    code, lines, _ = run_cli(
        capsys, "zeroshot", "--checkpoint", checkpoint, "--classes", "red,green,blue",
        "--templates", tmp_path / "t.json", "--lang", "pt", bad, good,
    )  # fmt: skip
    assert code == 1
    bad_line, good_line = (json.loads(line) for line in lines)
    assert bad_line["image"] == str(bad) and "bad.png" in bad_line["error"]
    assert good_line["label"] == "green"


def test_zeroshot_bad_spec_is_a_one_line_error(tmp_path: Path, capsys):
    code, _, err = run_cli(
        capsys, "zeroshot", "--checkpoint", tmp_path / "none.ckpt", "--classes", "a,b", "x.png"
    )
    assert code == 1 and "domainvlm: error:" in err and "none.ckpt" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_device_without_a_gpu_is_a_one_line_error(tmp_path: Path, checkpoint: Path, capsys):
    image = colour_png(tmp_path / "a.png", RED)
    code, lines, err = run_cli(
        capsys, "zeroshot", "--checkpoint", checkpoint, "--classes", "red,blue",
        "--device", "cuda", image,
    )  # fmt: skip
    assert code == 1 and not lines
    assert (
        err.strip() == "domainvlm: error: --device 'cuda': torch sees no CUDA GPU on this machine"
    )


def test_device_cpu_and_auto_give_the_same_answer(tmp_path: Path, checkpoint: Path, capsys):
    image = colour_png(tmp_path / "a.png", RED)
    answers = []
    for device in ("cpu", "auto"):
        code, lines, _ = run_cli(
            capsys, "zeroshot", "--checkpoint", checkpoint, "--classes", "red,blue",
            "--device", device, image,
        )  # fmt: skip
        assert code == 0
        answers.append(json.loads(lines[0]))
    assert answers[0]["label"] == answers[1]["label"] == "red"
    assert answers[0]["probability"] == pytest.approx(answers[1]["probability"], abs=1e-4)


# ----------------------------------------------------------------------------------- eval


def class_folders(root: Path) -> Path:
    """red: 3 red + 1 blue (a miss), green: 2 green, blue: 1 blue + 1 green (a miss)."""
    layout = {"red": [RED, RED, RED, BLUE], "green": [GREEN, GREEN], "blue": [BLUE, GREEN]}
    for name, colours in layout.items():
        for i, rgb in enumerate(colours):
            colour_png(root / name / f"{i}.png", rgb, seed=i)
    return root


def test_eval_zeroshot_on_class_folders(tmp_path: Path, checkpoint: Path, capsys):
    data = class_folders(tmp_path / "data")
    out = tmp_path / "result.json"
    code, lines, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", data,
        "--out", out, "--confusion-matrix", tmp_path / "cm.png",
    )  # fmt: skip
    assert code == 0 and len(lines) == 1
    result = json.loads(lines[0])
    assert result["acc1"] == pytest.approx(6 / 8)
    # classes sorted: blue (1/2), green (2/2), red (3/4)
    assert result["mean_per_class_recall"] == pytest.approx((1 / 2 + 1 + 3 / 4) / 3)
    assert result["num_classes"] == 3 and result["num_samples"] == 8 and "acc5" not in result
    assert json.loads(out.read_text()) == result
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_zeroshot_refuses_a_folder_without_classes(tmp_path: Path, checkpoint: Path, capsys):
    (tmp_path / "flat").mkdir()
    colour_png(tmp_path / "flat" / "x.png", RED)
    code, _, err = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", tmp_path / "flat"
    )
    assert code == 1 and "not a class-folder dataset" in err


def domain_root(root: Path) -> Path:
    for i, (name, rgb) in enumerate([("red", RED), ("green", GREEN), ("blue", BLUE)] * 2):
        colour_png(root / "test" / f"{name}_{i}.png", rgb, seed=i)
    colour_png(root / "train" / "red_0.png", BLUE)  # wrong on purpose: must not be read
    return root


def test_eval_zeroshot_uses_the_checkpoint_domain_held_out_split(
    tmp_path: Path, checkpoint: Path, capsys, colours_domain
):
    root = domain_root(tmp_path / "sample")
    code, lines, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", root, "--lang", "pt"
    )
    assert code == 0
    assert hook_calls == [("zeroshot", root, "test", "pt")]
    result = json.loads(lines[0])
    assert result["acc1"] == 1.0 and result["num_samples"] == 6 and result["lang"] == "pt"

    code, _, err = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", checkpoint, "--data", root, "--lang", "ko"
    )
    assert code == 1 and "'ko'" in err and "en, pt" in err


def test_eval_retrieval_on_a_domain_root(tmp_path: Path, checkpoint: Path, capsys, colours_domain):
    root = domain_root(tmp_path / "sample")
    code, lines, _ = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", checkpoint, "--data", root,
        "--domain", "colours", "--split", "test",
    )  # fmt: skip
    assert code == 0 and hook_calls == [("retrieval", root, "test")]
    result = json.loads(lines[0])
    assert result["num_images"] == 6 and result["num_texts"] == 6
    # two images share each colour: the caption's own image is first or second among its twins
    assert result["image_retrieval_recall@5"] == 1.0
    assert set(result["per_language"]) == {"en"}


def test_eval_retrieval_on_jsonl_captions_per_language(tmp_path: Path, checkpoint: Path, capsys):
    colour_png(tmp_path / "img" / "r.png", RED)
    colour_png(tmp_path / "img" / "g.png", GREEN)
    colour_png(tmp_path / "img" / "b.png", BLUE)
    rows = [
        {"image": "img/r.png", "caption": "a red field", "lang": "en"},
        {"image": "img/g.png", "caption": "a green field", "lang": "en"},
        {"image": "img/b.png", "caption": "a green lake", "lang": "en"},  # misleading caption
        {"image": "img/r.png", "caption": "um campo red", "lang": "pt"},
        {"image": "img/b.png", "caption": "um lago blue", "lang": "pt"},
    ]
    data = tmp_path / "captions.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    code, lines, _ = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", checkpoint, "--data", data
    )
    assert code == 0
    result = json.loads(lines[0])
    assert result["num_images"] == 3 and result["num_texts"] == 5
    # text -> image @1: all but "a green lake" (it finds g.png first)
    assert result["image_retrieval_recall@1"] == pytest.approx(4 / 5)
    # image -> text @1: r.png and b.png find one of theirs first; g.png's best is a tie it may lose
    assert result["text_retrieval_recall@5"] == 1.0
    assert set(result["per_language"]) == {"en", "pt"}
    portuguese = result["per_language"]["pt"]
    assert portuguese["image_retrieval_recall@1"] == 1.0
    assert portuguese["text_retrieval_recall@1"] == 1.0
    six = [v for k, v in result.items() if "recall@" in k]
    assert result["mean_recall"] == pytest.approx(sum(six) / 6)

    (tmp_path / "escape.jsonl").write_text(json.dumps({"image": "../x.png", "caption": "x"}))
    code, _, err = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", checkpoint, "--data", tmp_path / "escape.jsonl"
    )
    assert code == 1 and "escape.jsonl:1" in err


# -------------------------------------------------------------------------------------- kb


def test_eval_retrieval_grid_shows_the_misleading_caption_as_a_miss(
    tmp_path: Path, checkpoint: Path, capsys
):
    from domainvlm.core.plots import HIT, MISS

    rows = [("r.png", "a red field", RED), ("g.png", "a green field", GREEN)]
    rows += [("b.png", "a green lake", BLUE)]  # misleading: retrieves g.png first
    for name, _, rgb in rows:
        colour_png(tmp_path / name, rgb)
    data = tmp_path / "captions.jsonl"
    data.write_text("\n".join(json.dumps({"image": n, "caption": c}) for n, c, _ in rows))
    code, lines, _ = run_cli(
        capsys, "eval", "retrieval", "--checkpoint", checkpoint, "--data", data,
        "--grid", tmp_path / "grid.png", "--grid-queries", "3",
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["grid"] == str(tmp_path / "grid.png")
    cell, top, text_width = 96 + 6, 3, 280
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (text_width + 3 * cell, 3 * cell)
        first = [grid.getpixel((text_width + 1, row * cell + top + 1)) for row in range(3)]
    assert first == [HIT, HIT, MISS]


def test_kb_build_search_and_info_from_jsonl(tmp_path: Path, checkpoint: Path, capsys):
    colour_png(tmp_path / "tiles" / "red.png", RED)
    rows = [
        {"text": "red brick roofs", "level": "object"},
        {"text": "green forest", "level": "scene"},
        {"text": "blue lake", "level": "scene", "year": 2020},
        {"image": "tiles/red.png", "level": "scene"},
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    kb = tmp_path / "kb"
    code, lines, _ = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--checkpoint", checkpoint,
        "--out", kb,
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["count"] == 4

    code, lines, _ = run_cli(capsys, "kb", "search", kb, "--text", "something red", "-k", "2")
    hits = [json.loads(line) for line in lines]
    assert code == 0 and [h["rank"] for h in hits] == [1, 2]
    assert {h["record"].get("text", h["record"].get("image")) for h in hits} == {
        "red brick roofs",
        "tiles/red.png",
    }

    code, lines, _ = run_cli(
        capsys, "kb", "search", kb, "--image", tmp_path / "tiles" / "red.png", "-k", "1",
        "--filter", "level=object",
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["record"]["text"] == "red brick roofs"
    code, lines, _ = run_cli(capsys, "kb", "search", kb, "--text", "red", "--filter", "year=2020")
    assert [json.loads(line)["record"]["text"] for line in lines] == ["blue lake"]

    code, lines, _ = run_cli(capsys, "kb", "info", kb)
    manifest = json.loads("\n".join(lines))
    assert code == 0 and manifest["count"] == 4
    assert manifest["encoder"]["name"] == str(checkpoint.resolve())


def test_kb_search_refuses_another_encoder_unless_told(
    tmp_path: Path, checkpoint: Path, capsys, colours_domain
):
    kb = tmp_path / "kb"
    code, _, _ = run_cli(
        capsys, "kb", "build", "--domain", "colours", "--checkpoint", checkpoint, "--out", kb
    )
    assert code == 0
    other_system = ColourSystem()
    with torch.no_grad():
        other_system.mix.weight.mul_(3.0)
    other = save_checkpoint(other_system, tmp_path / "other.ckpt")
    code, _, err = run_cli(capsys, "kb", "search", kb, "--text", "blue", "--checkpoint", other)
    assert code == 1 and "domainvlm: error:" in err and "--allow-encoder-mismatch" in err
    code, lines, _ = run_cli(
        capsys, "kb", "search", kb, "--text", "blue", "-k", "1", "--checkpoint", other,
        "--allow-encoder-mismatch",
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["record"]["text"] == "blue: lakes and sea"


def test_kb_build_rejects_bad_jsonl_lines(tmp_path: Path, checkpoint: Path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"meta": 1}\n')
    code, _, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "bad.jsonl", "--checkpoint", checkpoint,
        "--out", tmp_path / "kb",
    )  # fmt: skip
    assert code == 1 and "bad.jsonl:2" in err and not (tmp_path / "kb").exists()


def test_serve_refuses_a_malformed_kb_argument(checkpoint: Path, capsys):
    code, _, err = run_cli(capsys, "serve", "--checkpoint", checkpoint, "--kb", "nodir")
    assert code == 1 and "NAME=DIR" in err


def test_eval_table_has_one_row_per_language_in_percent():
    from domainvlm.core.commands.evaluate import format_table

    result = {
        "task": "zeroshot",
        "lang": "all",
        "per_language": {
            "en": {"acc1": 0.5, "mean_per_class_recall": 0.25, "num_classes": 3},
            "de": {"acc1": 0.125, "mean_per_class_recall": 1.0, "num_classes": 3},
        },
    }
    lines = format_table(result).splitlines()
    assert lines[0] == "zeroshot (percent)"
    assert lines[1].split() == ["lang", "acc1", "mean_per_class_recall"]
    assert lines[2].split() == ["en", "50.0", "25.0"]
    assert lines[3].split() == ["de", "12.5", "100.0"]
