from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.precision import PrecisionError
from domainvlm.core.towers.token_merging import MergingTransformer, TokenMergingError

from tests.helpers import colour_png, run_cli, save_checkpoint
from tests.plugins.colours import ColourSystem

TINY = "openclip:dvlm-tiny"  # random weights, 64 px, 1 + 64 tokens


def _images() -> torch.Tensor:
    return torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def test_loader_applies_token_merging_and_bf16() -> None:
    torch.manual_seed(0)
    plain = load_encoder(TINY)
    torch.manual_seed(0)
    fast = load_encoder(TINY, token_merging=8, precision="bf16")
    (model,) = fast.modules
    assert isinstance(model.visual.transformer, MergingTransformer)
    assert not isinstance(model.transformer, MergingTransformer)  # the causal text tower
    assert fast.identity()["sha256"] == plain.identity()["sha256"]
    reference, images = plain.encode_images(_images()), fast.encode_images(_images())
    assert images.dtype == torch.float32
    assert not torch.equal(reference, images)
    assert torch.nn.functional.cosine_similarity(reference, images).min() > 0.98
    texts = fast.encode_texts(["a red square", "a blue square"])
    assert torch.nn.functional.cosine_similarity(plain.encode_texts(
        ["a red square", "a blue square"]), texts).min() > 0.98  # fmt: skip


def test_loader_refuses_unknown_precision_and_towers_without_vit(tmp_path: Path) -> None:
    with pytest.raises(PrecisionError, match="fp16"):
        load_encoder(TINY, precision="fp16")
    checkpoint = save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")
    with pytest.raises(TokenMergingError, match="no open_clip ViT"):
        load_encoder(str(checkpoint), token_merging=4)


def test_commands_take_token_merging_and_precision(tmp_path: Path, capsys) -> None:
    red = colour_png(tmp_path / "data" / "red" / "0.png", (230, 20, 10))
    colour_png(tmp_path / "data" / "blue" / "0.png", (15, 30, 220))
    results = {}
    for flags in ([], ["--token-merging", "8", "--precision", "bf16"]):
        code, lines, _ = run_cli(
            capsys, "zeroshot", "--checkpoint", TINY, "--classes", "red,blue", *flags, red
        )
        assert code == 0
        results[len(flags)] = json.loads(lines[0])["top_k"]
    plain, fast = ({row["label"]: row["probability"] for row in r} for r in results.values())
    assert plain.keys() == fast.keys()
    assert all(abs(plain[label] - fast[label]) < 0.05 for label in plain)

    code, lines, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", TINY, "--data", tmp_path / "data",
        "--token-merging", "0.25", "--precision", "bf16",
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["num_samples"] == 2

    jsonl = tmp_path / "kb.jsonl"
    jsonl.write_text(json.dumps({"image": str(red), "id": "r"}) + "\n")
    code, _, _ = run_cli(
        capsys, "kb", "build", "--jsonl", jsonl, "--checkpoint", TINY, "--out", tmp_path / "kb",
        "--token-merging", "8",
    )  # fmt: skip
    assert code == 0 and (tmp_path / "kb").is_dir()


def test_bad_token_merging_flag_is_a_usage_error(tmp_path: Path, capsys) -> None:
    image = colour_png(tmp_path / "a.png", (1, 2, 3))
    with pytest.raises(SystemExit):
        run_cli(capsys, "zeroshot", "--checkpoint", TINY, "--classes", "a,b",
                "--token-merging", "0.9", image)  # fmt: skip
    assert "ratio must be in [0, 0.5]" in capsys.readouterr().err
