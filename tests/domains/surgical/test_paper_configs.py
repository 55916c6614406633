"""The HecVL / PeskaVLP paper configs carry the papers' schedules and weights; the tiny second
configs (hierarchy.yaml, procedure.yaml) parse on top of tiny.yaml."""

from __future__ import annotations

import pytest
import yaml

from tests.helpers import CONFIGS


def _init_args(name: str) -> tuple[dict, dict]:
    config = yaml.safe_load((CONFIGS / "surgical" / name).read_text())
    return config["model"]["init_args"], config["data"]["init_args"]


def test_hecvl_levels_and_schedules():
    model, data = _init_args("hecvl.yaml")
    assert (model["phase_every"], model["video_every"]) == (3, 5)
    assert (data["phase_frames"], data["phase_children"]) == (16, 3)
    assert (data["video_frames"], data["video_children"]) == (64, 8)
    assert (model["context_length"], model["level_context_length"]) == (77, 200)
    assert model["temperature"] == 0.1 and model["lr"] == 8e-5 and model["decay"] == "cosine"
    assert model.get("procedure_weight", 0) == 0  # no soft-DTW in HecVL


def test_peskavlp_adds_the_alignment_at_the_video_level():
    model, data = _init_args("peskavlp.yaml")
    # PeskaVLP's video level: (four hierarchical terms + 0.1 L_dtw) / 5, ours averages the four
    assert model["video_weight"] == pytest.approx(4 / 5)
    assert model["procedure_weight"] == pytest.approx(0.1 / 5)
    assert model["procedure_every"] == model["video_every"] == 5
    assert (model["dtw_gamma"], model["dtw_scale"], model["dtw_ratio"], model["dtw_margin"]) == (
        0.1, 0.01, 0.5, 0.0,
    )  # fmt: skip
    assert data["procedure_frames"] == data["video_frames"] == 64
    assert model["simclr_weight"] > 0 and data["views"] == 3  # visual self-supervision


def test_tiny_second_configs_parse_on_top_of_tiny(capsys):
    from domainvlm.core.cli import main

    folder = CONFIGS / "surgical"
    argv = ["fit", "--config", str(folder / "tiny.yaml")]
    for name in ("hierarchy.yaml", "procedure.yaml"):
        argv += ["--config", str(folder / name)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    model, data = printed["model"]["init_args"], printed["data"]["init_args"]
    assert (model["phase_every"], model["video_every"], model["procedure_every"]) == (3, 5, 1)
    assert (data["video_frames"], data["procedure_frames"], data["phase_frames"]) == (16, 16, 16)
