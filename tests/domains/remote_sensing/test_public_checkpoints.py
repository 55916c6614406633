"""The eval configs for public RS checkpoints, loaded through local files of the same kind."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import domainvlm.core.towers.clip  # noqa: F401  (registers the dvlm-* model configs with open_clip)
import numpy as np
import open_clip
import pytest
import torch
from domainvlm.core.cli import main
from domainvlm.core.commands import evaluate
from PIL import Image

EVAL_CONFIGS = Path(__file__).parents[3] / "configs" / "remote_sensing" / "eval"


def parse_eval(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


def scene_folders(root: Path) -> Path:
    colours = {"Forest": (30, 110, 40), "SeaLake": (20, 40, 120)}
    lines = []
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            pixels = np.clip(np.array(colour) + 8 * i, 0, 255).astype(np.uint8)
            Image.fromarray(np.tile(pixels, (64, 64, 1))).save(root / name / f"{i}.png")
            lines.append(f"{name}/{i}.png")
    (root / "test.txt").write_text("\n".join(lines))
    return root


@pytest.mark.parametrize("config", sorted(EVAL_CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_eval_config_sets_a_remote_sensing_encoder_spec(config):
    args = parse_eval(["zeroshot", "--config", str(config), "--data", "somewhere"])
    assert args.domain == "remote_sensing" and args.lang == "en"
    assert args.checkpoint.startswith(("openclip:ViT-B-32:", "hf-hub:joaodaniel/RS-M-CLIP"))
    assert args.data == Path("somewhere")


def test_eval_config_rejects_unknown_options(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("checkpoint: openclip:ViT-B-32\nlangauge: de\n")
    with pytest.raises(SystemExit):
        parse_eval(["zeroshot", "--config", str(bad)])
    assert "unknown option 'langauge'" in capsys.readouterr().err


def run_eval(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_local_open_clip_weights_evaluate_like_a_public_checkpoint(tmp_path, capsys):
    model = open_clip.create_model("dvlm-tiny")
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    data = scene_folders(tmp_path / "scenes")
    config = EVAL_CONFIGS / "remoteclip_vit_b32.yaml"
    argv = ["eval", "zeroshot", "--config", str(config), "--data", str(data)]
    result = run_eval([*argv, "--checkpoint", f"openclip:dvlm-tiny:{weights}"], capsys)
    assert result["num_samples"] == 6 and result["num_classes"] == 2
    assert 0.0 <= result["acc1"] <= 1.0


@pytest.mark.slow
def test_vit_b32_state_dict_file_loads_through_the_remoteclip_config(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        open_clip.create_model("ViT-B-32").state_dict(),
        tmp_path / "checkpoints" / "RemoteCLIP-ViT-B-32.pt",
    )
    data = scene_folders(tmp_path / "scenes")
    config = EVAL_CONFIGS / "remoteclip_vit_b32.yaml"
    result = run_eval(["eval", "zeroshot", "--config", str(config), "--data", str(data)], capsys)
    assert result["num_samples"] == 6
