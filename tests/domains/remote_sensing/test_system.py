from __future__ import annotations

from pathlib import Path

import pytest
import torch
from domainvlm.core.checkpoint import load_system
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
