from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.checkpoint import load_system
from domainvlm.core.datamodule import collate
from domainvlm.domains.surgical.datamodule import SurgicalVideoDataModule
from domainvlm.domains.surgical.system import SurgVLP, clip_path

TINY = {"model_name": "surgvlp-tiny", "tokenizer": "openclip:ViT-B-32", "context_length": 32}


@pytest.fixture(scope="module")
def batch(sample_root: Path) -> dict:
    module = SurgicalVideoDataModule(root=str(sample_root), views=3, bag_size=2)
    train = module.dataset("train")
    spread = range(0, len(train), len(train) // 6)  # anchors of different phases and videos
    return collate([train[i] for i in spread][:6])


def test_every_weighted_term_is_in_the_total(batch: dict):
    torch.manual_seed(0)
    system = SurgVLP(**TINY, nt_xent_weight=0.5, simclr_weight=0.25, mil_nce_weight=2.0)
    losses = system.compute_losses(batch, "train")
    assert set(losses) == {"infonce", "nt_xent", "mil_nce", "simclr", "loss"}
    expected = (
        losses["infonce"]
        + 0.5 * losses["nt_xent"]
        + 2.0 * losses["mil_nce"]
        + 0.25 * losses["simclr"]
    )
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert all(torch.isfinite(value) for value in losses.values())


def test_zero_weights_skip_terms_and_one_view_has_no_simclr(batch: dict):
    system = SurgVLP(**TINY, mil_nce_weight=0.0, simclr_weight=1.0)
    one_view = {**batch, "frames": batch["frames"][0]}
    assert set(system.compute_losses(one_view, "train")) == {"infonce", "loss"}


def test_infonce_term_is_clip_infonce_at_the_fixed_temperature(batch: dict):
    torch.manual_seed(0)
    system = SurgVLP(**TINY, mil_nce_weight=0.0).eval()
    view = batch["frames"][0]
    with torch.no_grad():
        loss = system.compute_losses({**batch, "frames": view}, "val")["infonce"]
        video = F.normalize(system.model.encode_clips(view), dim=-1)
        text = F.normalize(system.encode_text(batch["text"]), dim=-1)
    logits = video @ text.T / 0.1
    labels = torch.arange(len(view))
    by_hand = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_a_few_steps_fit_one_batch(batch: dict):
    torch.manual_seed(0)
    system = SurgVLP(**TINY)
    one_view = {**batch, "frames": batch["frames"][0]}
    optimiser = torch.optim.Adam(system.parameters(), lr=3e-4)
    first = None
    for _ in range(10):
        loss = system.compute_losses(one_view, "train")["loss"]
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < 0.8 * first


def test_encoder_reads_frames_and_clip_ranges(pretrained: Path, sample_root: Path):
    encoder = load_system(pretrained).encoder()
    video = sample_root / "videos" / "video06.mp4"
    frame = encoder.load_image(f"{video}#t=3")
    clip = encoder.load_image(clip_path(video, 2.0, 5.0))
    assert frame.shape == (3, 64, 64) and clip.shape == (4, 3, 64, 64)
    # a clip embeds as the mean of its frames' embeddings (before normalisation)
    pooled = encoder.image_fn(clip[None])
    assert torch.allclose(pooled[0], encoder.image_fn(clip).mean(dim=0), atol=1e-5)
    assert torch.allclose(clip[1], frame)  # frames at 2, 3, 4, 5 s: the one at 3 s is that frame


def test_paper_recipe_towers_build_offline_from_a_local_bert_config(tmp_path: Path):
    """ResNet-50 → avg pool → linear 768 per frame, BERT mean-pooled to 768 (no projection)."""
    from domainvlm.domains.surgical.model import SurgicalDualEncoder
    from transformers import BertConfig

    BertConfig(
        vocab_size=64,
        hidden_size=768,
        num_hidden_layers=1,
        num_attention_heads=12,
        intermediate_size=64,
    ).save_pretrained(tmp_path / "bert")
    model = SurgicalDualEncoder("surgvlp-rn50-bioclinicalbert", hf_text_dir=str(tmp_path / "bert"))
    assert model.embed_dim == 768 and model.clip.visual.head.proj.in_features == 2048
    with torch.no_grad():
        clips = model.encode_clips(torch.randn(1, 2, 3, 224, 224))
        text = model.encode_text(torch.randint(1, 60, (2, 77)))
    assert clips.shape == (1, 768) and text.shape == (2, 768)


def test_procedure_batches_add_the_keystep_alignment_term(sample_root: Path):
    module = SurgicalVideoDataModule(
        root=str(sample_root), procedure_frames=12, procedure_batch_size=2
    )
    loaders = module.train_dataloader()
    clips, procedure = next(iter(loaders["clips"])), next(iter(loaders["procedure"]))
    assert procedure["frames"].shape == (2, 12, 3, 64, 64)
    assert [len(steps) for steps in procedure["steps"]] == [7, 7]  # one keystep per phase
    torch.manual_seed(0)
    system = SurgVLP(**TINY, procedure_weight=0.5)
    losses = system.compute_losses({"clips": clips, "procedure": procedure}, "train")
    expected = losses["infonce"] + losses["mil_nce"] + 0.5 * losses["procedure"]
    assert losses["procedure"] > 0 and losses["loss"].item() == pytest.approx(expected.item())
    assert "procedure" not in system.compute_losses(clips, "val")


def test_fit_with_the_procedure_config_runs_on_both_loaders(sample_root: Path, tmp_path: Path):
    """Lightning cycles {"clips", "procedure"} loaders through BaseSystem's training step."""
    import yaml

    from tests.helpers import CONFIGS, fit_briefly

    override = yaml.safe_load((CONFIGS / "surgical" / "procedure.yaml").read_text())
    checkpoint = fit_briefly(
        CONFIGS / "surgical" / "tiny.yaml",
        tmp_path,
        {
            "root": str(sample_root),
            "batch_size": 8,
            "num_workers": 0,
            **override["data"]["init_args"],
        },
        override["model"]["init_args"],
    )
    assert load_system(checkpoint).hparams.procedure_weight == 0.1


def test_phase_level_items_and_the_hierarchical_term(sample_root: Path):
    module = SurgicalVideoDataModule(
        root=str(sample_root), phase_frames=6, phase_children=3, phase_batch_size=7
    )
    loaders = module.train_dataloader()
    assert set(loaders) == {"clips", "phase"}
    phase = next(iter(loaders["phase"]))
    assert phase["frames"].shape == (7, 6, 3, 64, 64) and len(phase["children"][0]) == 3
    torch.manual_seed(0)
    system = SurgVLP(**TINY, phase_weight=0.5, mil_nce_weight=0.0)
    losses = system.compute_losses({"clips": next(iter(loaders["clips"])), "phase": phase}, "train")
    assert losses["loss"].item() == pytest.approx(
        (losses["infonce"] + 0.5 * losses["phase"]).item()
    )
    # the four terms, by hand
    with torch.no_grad():
        video = F.normalize(system.model.encode_clips(phase["frames"]), dim=-1)
        parent = F.normalize(system.encode_text(phase["parent"]), dim=-1)
        flat = [t for texts in phase["children"] for t in texts]
        kids = F.normalize(system.encode_text(flat), dim=-1).reshape(7, 3, -1).mean(dim=1)
        kids = F.normalize(kids, dim=-1)

    def infonce(a, b):
        logits, labels = a @ b.T / 0.1, torch.arange(len(a))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2

    def nt_xent(a, b):
        logits, labels = a @ b.T / 0.1, torch.arange(len(a))
        return 0.75 * F.cross_entropy(logits, labels) + 0.25 * F.cross_entropy(logits.T, labels)

    by_hand = (
        infonce(video, parent)
        + nt_xent(video, parent)
        + infonce(video, kids)
        + infonce(parent, kids)
    ) / 4
    assert losses["phase"].item() == pytest.approx(by_hand.item(), rel=1e-4)


def test_uniform_stride_keeps_order_and_repeats_when_short():
    from domainvlm.domains.surgical.procedure import uniform_stride, whole_video_times

    # linspace(0, 9, 8) = 0, 1.29, 2.57, 3.86, 5.14, 6.43, 7.71, 9 -> rounded
    assert uniform_stride(list("abcdefghij"), 8) == list("abdefgij")
    assert uniform_stride(["a", "b"], 4) == ["a", "a", "b", "b"]
    assert whole_video_times(8.0, 4) == [1.0, 3.0, 5.0, 7.0]


def test_video_level_needs_an_abstract_and_keysteps(tmp_path: Path):
    from domainvlm.domains.surgical.procedure import VideoLevelDataset, read_video_summary
    from domainvlm.domains.surgical.video import SurgicalDataError

    (tmp_path / "keystep_texts").mkdir()
    (tmp_path / "keystep_texts" / "v1.csv").write_text(
        "start,end,step,text\n5,9,1,clip the duct\n0,5,0,insert trocars\n"
    )
    video = tmp_path / "videos" / "v1.mp4"
    assert read_video_summary(tmp_path, "v1", video, 9.0) is None  # no abstract yet
    (tmp_path / "abstract_texts").mkdir()
    (tmp_path / "abstract_texts" / "v1.csv").write_text("text\na cholecystectomy\n")
    summary = read_video_summary(tmp_path, "v1", video, 9.0)
    assert summary.abstract == "a cholecystectomy"
    assert summary.steps == ["insert trocars", "clip the duct"]  # start order
    with pytest.raises(SurgicalDataError, match="abstract"):
        VideoLevelDataset([], transform=None)


def test_video_level_items_and_the_hierarchical_term(sample_root: Path):
    module = SurgicalVideoDataModule(
        root=str(sample_root), video_frames=6, video_children=8, video_batch_size=3
    )
    loaders = module.train_dataloader()
    assert set(loaders) == {"clips", "video"}
    video = next(iter(loaders["video"]))
    assert video["frames"].shape == (3, 6, 3, 64, 64)
    # 7 keysteps -> 8 children at linspace(0, 6, 8) rounded: 0 1 2 3 3 4 5 6
    steps = [row.text for row in _keysteps(sample_root, "video01")]
    assert module.dataset("train").videos[0].id == "video01"
    item = loaders["video"].dataset[0]
    assert item["children"] == [steps[i] for i in (0, 1, 2, 3, 3, 4, 5, 6)]
    assert item["parent"].startswith("laparoscopic cholecystectomy with a long ")
    torch.manual_seed(0)
    system = SurgVLP(**TINY, video_weight=0.5, mil_nce_weight=0.0)
    losses = system.compute_losses({"clips": next(iter(loaders["clips"])), "video": video}, "train")
    assert set(losses) == {"infonce", "video", "loss"}
    assert losses["loss"].item() == pytest.approx(
        (losses["infonce"] + 0.5 * losses["video"]).item()
    )
    with torch.no_grad():
        v = F.normalize(system.model.encode_clips(video["frames"]), dim=-1)
        parent = F.normalize(system.encode_text(video["parent"]), dim=-1)
        flat = [t for texts in video["children"] for t in texts]
        kids = F.normalize(system.encode_text(flat), dim=-1).reshape(3, 8, -1).mean(dim=1)
        kids = F.normalize(kids, dim=-1)
    labels = torch.arange(3)

    def ce(a, b):
        logits = a @ b.T / 0.1
        return F.cross_entropy(logits, labels), F.cross_entropy(logits.T, labels)

    a2t, t2a = ce(v, parent)
    by_hand = (
        (a2t + t2a) / 2
        + (0.75 * a2t + 0.25 * t2a)
        + sum(ce(v, kids)) / 2
        + sum(ce(parent, kids)) / 2
    ) / 4
    assert losses["video"].item() == pytest.approx(by_hand.item(), rel=1e-4)


def _keysteps(root: Path, video_id: str) -> list:
    from domainvlm.domains.surgical.transcripts import read_keysteps

    return sorted(read_keysteps(root / "keystep_texts" / f"{video_id}.csv"), key=lambda s: s.start)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, {"phase", "video"}), (3, {"phase"}), (5, {"video"}), (7, set()), (15, {"phase", "video"})],
)
def test_each_level_runs_on_its_own_epoch_schedule(epoch: int, expected: set):
    from types import SimpleNamespace

    system = SurgVLP(**TINY, mil_nce_weight=0.0, phase_weight=1.0, video_weight=1.0)
    system._trainer = SimpleNamespace(current_epoch=epoch)  # HecVL: phase every 3rd, video 5th
    torch.manual_seed(0)
    frames = torch.randn(2, 2, 3, 64, 64)
    level = {"frames": frames, "parent": ["a", "b"], "children": [["c", "d"], ["e", "f"]]}
    clips = {"frames": frames, "text": ["x", "y"]}
    losses = system.compute_losses({"clips": clips, "phase": level, "video": level}, "train")
    assert set(losses) - {"infonce", "loss"} == expected
    total = losses["infonce"] + sum(losses[name] for name in expected)
    assert losses["loss"].item() == pytest.approx(total.item())


def test_the_levels_may_use_a_longer_text_context():
    """HecVL tokenises clip sentences to 77 tokens and level texts to 200."""
    system = SurgVLP(**TINY, level_context_length=16)
    seen = []
    system.model.encode_text = lambda tokens: seen.append(tokens.shape[-1]) or torch.zeros(1, 8)
    system.encode_text(["a"])
    system.encode_level_text(["a"])
    assert seen == [32, 16]
    plain = SurgVLP(**TINY)
    assert plain.level_tokenizer is plain.tokenizer
