"""``--trainer.precision bf16-mixed`` trains a tiny config on the CPU (AVX-512 BF16 or not)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
import yaml
from domainvlm.core.checkpoint import load_system

from tests.helpers import CONFIGS, fit_briefly


def test_tiny_config_trains_in_bf16_mixed(rs_sample: Path, tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "remote_sensing" / "tiny.yaml").read_text())
    config["trainer"].update(precision="bf16-mixed", log_every_n_steps=1)
    path = tmp_path / "config" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    data = {"root": str(rs_sample), "batch_size": 8, "num_workers": 0, "n_local_crops": 1}
    checkpoint = fit_briefly(path, tmp_path, data)

    (metrics,) = (tmp_path / config["trainer"]["default_root_dir"]).glob("logs/*/metrics.csv")
    losses = [float(r["train/loss"]) for r in csv.DictReader(metrics.open()) if r["train/loss"]]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    system = load_system(checkpoint)
    assert all(p.dtype == torch.float32 for p in system.parameters())  # weights stay fp32
