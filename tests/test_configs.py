"""Every shipped config parses against the classes it names (typos in keys fail here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.core.cli import main

CONFIGS = Path(__file__).parents[1] / "configs"
STANDALONE = sorted(p for p in CONFIGS.rglob("*.yaml") if "model:\n  class_path" in p.read_text())


@pytest.mark.parametrize("config", STANDALONE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_parses_and_prints(config: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path" in printed and "root:" in printed
    if "ModelCheckpoint" in printed:
        # Lightning would write last-v1.ckpt beside an old last.ckpt, and the configs that
        # read last.ckpt (init_from, make demo) would silently use the previous run.
        assert "enable_version_counter: false" in printed


@pytest.mark.parametrize(
    ("experts", "ablation", "run_dir"),
    [
        ("semantic_experts.yaml", "no_retrieval.yaml", "semantic_experts_no_retrieval"),
        ("semantic_experts_vqa.yaml", "no_retrieval_vqa.yaml", "semantic_experts_vqa_no_retrieval"),
    ],
)
def test_ablation_override_turns_retrieval_off(experts, ablation, run_dir, capsys):
    """Each ablation writes to its own directory, so its last.ckpt never collides with another."""
    folder = CONFIGS / "remote_sensing"
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--config",
                str(folder / experts),
                "--config",
                str(folder / ablation),
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "use_retrieval: false" in printed
    assert f"default_root_dir: runs/remote_sensing/{run_dir}\n" in printed


@pytest.mark.parametrize("config", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_outputs_are_named_once_by_the_run_directory(config: Path):
    """No config pins a checkpoint dirpath or a logger save_dir: both follow default_root_dir."""
    text = config.read_text()
    assert "dirpath:" not in text and "save_dir:" not in text
