"""``--trainer.precision bf16-mixed`` trains the tiny configs on the CPU (AVX-512 BF16 or not)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
import yaml
from domainvlm.core.checkpoint import load_system
from domainvlm.domains.remote_sensing.datamodule import RSSceneDataModule
from domainvlm.domains.remote_sensing.system import RSMCLIP, SemanticExpertsSystem

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


def test_semantic_experts_retrieve_bf16_queries(rs_sample: Path, tmp_path: Path) -> None:
    """Under bf16 autocast the experts' queries are bf16; FAISS gets them as fp32."""
    clip = RSMCLIP(in_chans=4, distill_weight=0.0)
    checkpoint = {"state_dict": clip.state_dict()}
    clip.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "clip.ckpt")
    system = SemanticExpertsSystem(
        init_from=str(tmp_path / "clip.ckpt"), in_chans=4, k_object=3, k_scene=2, dim=32
    )
    datamodule = RSSceneDataModule(root=str(rs_sample), bands=[3, 2, 1, 4])
    system._trainer = type("T", (), {"datamodule": datamodule})()  # setup reads only this
    system.setup("fit")
    queries = torch.randn(2, 128, generator=torch.Generator().manual_seed(0))
    cues, scores = system.retrieve(queries.to(torch.bfloat16), "scene", k=2, per_image=1)
    expected_cues, expected_scores = system.retrieve(queries.bfloat16().float(), "scene", 2, 1)
    assert cues.shape == (2, 2, 128) and torch.equal(cues, expected_cues)
    assert torch.equal(scores, expected_scores)
