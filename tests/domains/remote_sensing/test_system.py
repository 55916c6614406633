from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.checkpoint import load_system
from domainvlm.core.losses import clip_loss
from domainvlm.domains.remote_sensing import PLUGIN
from domainvlm.domains.remote_sensing.datamodule import RSCaptionDataModule
from domainvlm.domains.remote_sensing.system import RSMCLIP

from tests.helpers import CONFIGS, fit_briefly

CONFIG = CONFIGS / "remote_sensing" / "tiny.yaml"


@pytest.fixture(scope="module")
def sample_root(tmp_path_factory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("rs") / "sample", size="small")


def small_batch(root: Path, batch_size: int = 8) -> tuple[RSCaptionDataModule, dict]:
    datamodule = RSCaptionDataModule(
        root=str(root), bands=[3, 2, 1, 4], n_local_crops=2, batch_size=batch_size
    )
    datamodule.setup("fit")
    return datamodule, next(iter(datamodule.train_dataloader()))


def test_batch_has_global_then_local_views_in_model_band_order(sample_root):
    datamodule, batch = small_batch(sample_root)
    shapes = [tuple(view.shape) for view in batch["image"]]
    assert shapes == [(8, 4, 64, 64)] * 2 + [(8, 4, 32, 32)] * 2
    assert len(batch["text"]) == 8 and set(batch["lang"]) <= set(PLUGIN.languages)
    pre = datamodule.preprocessing()
    assert pre["bands"] == [3, 2, 1, 4] and len(pre["mean"]) == 4 and pre["n_global_crops"] == 2


def test_losses_combine_clip_and_weighted_self_distillation(sample_root):
    datamodule, batch = small_batch(sample_root)
    system = RSMCLIP(in_chans=4, distill_weight=0.5, dino_out_dim=32, dino_hidden=32)
    system.preprocessing = datamodule.preprocessing()
    losses = system.compute_losses(batch, "train")
    assert set(losses) >= {"clip", "self_distillation", "loss"}
    expected = losses["clip"] + 0.5 * losses["self_distillation"]
    assert torch.allclose(losses["loss"], expected)
    # centring has seen one batch of teacher outputs, so it moved off zero
    assert system.dino_loss.center.abs().sum() > 0
    val = system.compute_losses({"image": batch["image"][0], "text": batch["text"]}, "val")
    assert torch.equal(val["loss"], val["clip"])


def test_teacher_follows_student_by_ema(sample_root):
    system = RSMCLIP(in_chans=4, dino_out_dim=16, dino_hidden=16)
    student = dict(system.student.named_parameters())
    teacher = dict(system.teacher.module.named_parameters())
    with torch.no_grad():
        for param in student.values():
            param.add_(1.0)
    before = {name: p.clone() for name, p in teacher.items()}
    m = system.teacher.update(system.student, step=0, total_steps=10)
    for name, param in teacher.items():
        assert torch.allclose(param, m * before[name] + (1 - m) * student[name], atol=1e-6)
        assert not param.requires_grad


def test_tiny_config_fits_and_checkpoint_rebuilds_an_encoder(sample_root, tmp_path):
    data = {"root": str(sample_root), "batch_size": 8, "num_workers": 0}
    system = load_system(fit_briefly(CONFIG, tmp_path, data))
    encoder = system.encoder()
    geotiff = next((sample_root / "scene_classes").rglob("*.tif"))
    image = encoder.load_image(geotiff)
    assert image.shape == (4, 64, 64)
    features = encoder.encode_images(image[None])
    texts = encoder.encode_texts(["a satellite photo of a forest.", "森林的卫星照片。"])
    assert features.shape == (1, 128) and texts.shape == (2, 128)
    assert torch.allclose(features.norm(dim=-1), torch.ones(1), atol=1e-5)


def test_zeroshot_hook_localises_class_names(sample_root):
    english = PLUGIN.zeroshot_data(sample_root, "test", "en")
    german = PLUGIN.zeroshot_data(sample_root, "test", "de")
    assert len(english.classnames) == 10 and english.paths == german.paths
    assert "sea or lake" in english.classnames and "Meer oder See" in german.classnames
    assert all("{}" in template for template in german.templates)


def test_retrieval_hook_lists_every_caption_with_its_language(sample_root):
    data = PLUGIN.retrieval_data(sample_root, "test")
    assert len(data.captions) == len(data.image_index) == len(data.languages)
    assert set(data.languages) == set(PLUGIN.languages)
    assert max(data.image_index) == len(data.paths) - 1


def test_clip_loss_reads_every_global_view_when_asked(sample_root):
    """SILC: each global view the teacher distils from is also aligned with the captions."""
    datamodule, batch = small_batch(sample_root)
    torch.manual_seed(0)
    system = RSMCLIP(in_chans=4, dino_out_dim=16, dino_hidden=16, clip_views="global")
    system.preprocessing = datamodule.preprocessing()
    with torch.no_grad():
        losses = system.compute_losses(batch, "train")
        text = F.normalize(system.encode_text(batch["text"]), dim=-1)
        per_view = [
            clip_loss(F.normalize(system.encode_image(view), dim=-1), text, system.logit_scale())
            for view in batch["image"][:2]
        ]
    assert not torch.allclose(per_view[0], per_view[1])
    assert torch.allclose(losses["clip"], (per_view[0] + per_view[1]) / 2, atol=1e-5)
    system.hparams.clip_views = "first"
    with torch.no_grad():
        assert torch.allclose(system.compute_losses(batch, "train")["clip"], per_view[0], atol=1e-5)
    with pytest.raises(ValueError, match="clip_views"):
        RSMCLIP(clip_views="all")


def test_teacher_moves_once_per_optimiser_step_and_last_layer_waits_an_epoch(sample_root):
    """Gradient accumulation 2 over 2 epochs of 2 micro-batches: 2 EMA updates (not 4), numbered
    by optimiser step; DINO's last layer stays as initialised through epoch 0 only."""
    import lightning as L

    datamodule = RSCaptionDataModule(
        root=str(sample_root), bands=[3, 2, 1, 4], n_local_crops=1, batch_size=4, num_workers=0
    )
    torch.manual_seed(0)
    system = RSMCLIP(in_chans=4, dino_out_dim=16, dino_hidden=16, lr=1e-2, warmup=0)
    updates: list[tuple[int, int]] = []
    update = system.teacher.update

    def recording_update(student, step, total_steps):
        updates.append((step, total_steps))
        return update(student, step, total_steps)

    system.teacher.update = recording_update
    head = system.student.head
    snapshots = [{name: p.detach().clone() for name, p in head.named_parameters()}]

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            snapshots.append({name: p.detach().clone() for name, p in head.named_parameters()})

    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        accumulate_grad_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Snapshot()],
    )
    trainer.fit(system, datamodule=datamodule)
    assert updates == [(0, 2), (1, 2)]
    direction = "last_layer.parametrizations.weight.original1"
    start, after_epoch_0, after_epoch_1 = snapshots
    assert torch.equal(after_epoch_0[direction], start[direction])
    assert not torch.equal(after_epoch_0["mlp.0.weight"], start["mlp.0.weight"])
    assert not torch.equal(after_epoch_1[direction], after_epoch_0[direction])
