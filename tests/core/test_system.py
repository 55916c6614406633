from __future__ import annotations

import math

import pytest
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.datamodule import collate
from domainvlm.core.ema import EMATeacher
from domainvlm.core.errors import CheckpointError
from domainvlm.core.losses import MAX_LOGIT_SCALE, LogitScale
from domainvlm.core.schedule import warmup_then_decay
from domainvlm.core.system import BaseSystem
from torch import nn


class Tiny(BaseSystem):
    def __init__(self, width: int = 4, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backbone = nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width))
        self.head = nn.Linear(width, 2)
        self.logit_scale = nn.Parameter(torch.zeros(()))


def test_parameter_groups_skip_decay_on_bias_norm_scale_and_apply_multipliers():
    system = Tiny(lr=1e-3, weight_decay=0.2, lr_multipliers={"head": 10.0})
    groups = system.parameter_groups()
    by_param = {id(p): g for g in groups for p in g["params"]}
    named = dict(system.named_parameters())
    assert by_param[id(named["backbone.0.weight"])]["weight_decay"] == 0.2
    assert by_param[id(named["backbone.0.weight"])]["lr"] == 1e-3
    for name in ("backbone.0.bias", "backbone.1.weight", "backbone.1.bias", "logit_scale"):
        assert by_param[id(named[name])]["weight_decay"] == 0.0, name
    assert by_param[id(named["head.weight"])]["lr"] == pytest.approx(1e-2)
    assert by_param[id(named["head.weight"])]["weight_decay"] == 0.2
    assert by_param[id(named["head.bias"])]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_warmup_then_cosine_and_linear():
    assert warmup_then_decay(0, 100, 10) == pytest.approx(0.1)
    assert warmup_then_decay(9, 100, 10) == pytest.approx(1.0)
    assert warmup_then_decay(10, 100, 10) == pytest.approx(1.0)
    assert warmup_then_decay(55, 100, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_then_decay(100, 100, 10) == pytest.approx(0.0)
    assert warmup_then_decay(55, 100, 10, "linear") == pytest.approx(0.5)
    assert warmup_then_decay(100, 100, 10, "cosine", min_ratio=0.1) == pytest.approx(0.1)


def test_ema_teacher_update_and_cosine_momentum():
    student = nn.Linear(2, 2)
    teacher = EMATeacher(student, momentum=0.9, final_momentum=1.0)
    assert not any(p.requires_grad for p in teacher.parameters())
    before = teacher.module.weight.clone()
    with torch.no_grad():
        student.weight.add_(1.0)
    m = teacher.update(student, step=0, total_steps=10)
    assert m == pytest.approx(0.9)
    expected = 0.9 * before + 0.1 * student.weight
    assert torch.allclose(teacher.module.weight, expected)
    assert teacher.momentum_at(10, 10) == pytest.approx(1.0)
    assert teacher.momentum_at(5, 10) == pytest.approx(0.95)


def test_checkpoint_round_trip_rebuilds_from_hyperparameters(tmp_path):
    system = Tiny(width=6, lr=3e-4, preprocessing={"image_size": 32, "mean": [0.5], "std": [0.2]})
    checkpoint = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "a.ckpt")
    loaded = load_system(tmp_path / "a.ckpt")
    assert isinstance(loaded, Tiny) and loaded.hparams.width == 6 and loaded.hparams.lr == 3e-4
    assert loaded.preprocessing == {"image_size": 32, "mean": [0.5], "std": [0.2]}
    assert torch.equal(loaded.head.weight, system.head.weight)
    assert not loaded.training


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_system(tmp_path / "missing.ckpt")
    (tmp_path / "corrupt.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_system(tmp_path / "corrupt.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not written by a domainvlm system"):
        load_system(tmp_path / "foreign.ckpt")

    system = Tiny(width=4)
    checkpoint = {"state_dict": Tiny(width=5).state_dict()}
    system.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, tmp_path / "mismatch.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_system(tmp_path / "mismatch.ckpt")

    checkpoint["domainvlm"]["class_path"] = "os.system"
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="not a domainvlm system"):
        load_system(tmp_path / "evil.ckpt")


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    torch.save({"domainvlm": {"class_path": "x"}, "payload": nn.Linear(2, 2)}, tmp_path / "p.ckpt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_system(tmp_path / "p.ckpt")


def test_collate_handles_images_views_clips_and_text():
    items = [
        {
            "image": torch.zeros(3, 4, 4),
            "views": [torch.zeros(3, 4, 4), torch.zeros(3, 2, 2)],
            "clip": torch.zeros(4, 3, 2, 2),
            "text": f"caption {i}",
            "label": i,
            "meta": {"crs": "EPSG:4326"},
        }
        for i in range(3)
    ]
    batch = collate(items)
    assert batch["image"].shape == (3, 3, 4, 4)
    assert [v.shape for v in batch["views"]] == [(3, 3, 4, 4), (3, 3, 2, 2)]
    assert batch["clip"].shape == (3, 4, 3, 2, 2)
    assert batch["text"] == ["caption 0", "caption 1", "caption 2"]
    assert batch["label"].tolist() == [0, 1, 2]
    assert batch["meta"][0] == {"crs": "EPSG:4326"}


class ScaleAtCap(BaseSystem):
    """A logit scale at the cap (ln 100, where LAION checkpoints sit) whose loss pushes it up
    (``direction`` 1) or down (-1); records the global step of every optimiser step."""

    def __init__(self, direction: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.logit_scale = LogitScale(MAX_LOGIT_SCALE)
        self.direction = direction
        self.steps: list[int] = []
        self.gradients: list[float] = []

    def compute_losses(self, batch, stage):
        return {"loss": -self.direction * self.logit_scale() * batch["x"].mean()}

    def on_before_optimizer_step(self, optimizer) -> None:
        self.gradients.append(float(self.logit_scale.log_scale.grad))

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.steps.append(self.global_step)


def _fit(system: BaseSystem, batches: int, accumulate: int) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    data = [{"x": torch.ones(1)} for _ in range(batches)]
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        accumulate_grad_batches=accumulate,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(system, DataLoader(data, batch_size=None))


def test_logit_scale_stays_trainable_at_the_cap_and_is_clamped_after_each_step():
    cap = math.log(MAX_LOGIT_SCALE)
    up = ScaleAtCap(direction=1.0, lr=0.1, warmup=0, decay="constant")
    _fit(up, batches=2, accumulate=1)
    # d(-scale)/d(log scale) = -100: the gradient is alive at the cap ...
    assert up.gradients == pytest.approx([-100.0, -100.0])
    # ... and the in-place clamp after each step keeps the parameter at the cap
    assert up.logit_scale.log_scale.item() <= torch.tensor(cap).item()  # ln 100 in float32
    assert up.logit_scale.log_scale.item() == pytest.approx(cap)
    down = ScaleAtCap(direction=-1.0, lr=0.1, warmup=0, decay="constant")
    _fit(down, batches=2, accumulate=1)
    assert down.logit_scale.log_scale.item() < cap - 0.15  # two AdamW steps of ~lr each


def test_step_hook_runs_once_per_optimiser_step_with_gradient_accumulation():
    system = ScaleAtCap(lr=0.1, warmup=0, decay="constant")
    _fit(system, batches=4, accumulate=2)
    # 4 micro-batches, 2 per step: 2 steps, numbered from 0, each seeing 2 summed gradients
    assert system.steps == [0, 1]
    assert system.gradients == pytest.approx([-100.0, -100.0])
