from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.errors import CheckpointError
from domainvlm.core.tokenizers import IGNORE_INDEX, build_tokenizer, whole_word_mask
from domainvlm.core.towers.mae import patchify
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.domains.medical.model import M3AEBackbone, itm_pairs
from domainvlm.domains.medical.system import (
    EVAL_SEED,
    M3AEPretrainSystem,
    M3AEVQASystem,
    VQAAccuracy,
)

SIZES = dict(
    image_size=32,
    patch=8,
    vision_width=32,
    vision_depth=2,
    vision_heads=2,
    context_length=64,
    text_width=32,
    text_depth=1,
    text_heads=2,
    hidden=32,
    fusion_layers=2,
    fusion_heads=2,
)
TEXTS = [
    "CT of the chest showing a nodule in the left lung.",
    "Radiograph of the brain.",
    "A cyst in the right hemiabdomen on abdomen CT.",
    "Normal chest radiograph.",
    "Axial CT image of the brain: left-sided cyst.",
    "Plain X-ray of the abdomen with no abnormality.",
]


def pretrain_system(**overrides) -> M3AEPretrainSystem:
    torch.manual_seed(0)
    settings = {**SIZES, "decoder_width": 32, "decoder_depth": 1, "passes": "joint"}
    return M3AEPretrainSystem(**{**settings, **overrides})


def batch(size: int = 6) -> dict:
    generator = torch.Generator().manual_seed(1)
    return {"image": torch.randn(size, 3, 32, 32, generator=generator), "text": TEXTS[:size]}


class Recorder:
    """Forward hooks that keep every call's inputs and output."""

    def __init__(self, *modules: torch.nn.Module) -> None:
        self.calls: list[tuple[tuple, object]] = []
        for module in modules:
            module.register_forward_hook(lambda _, args, out: self.calls.append((args, out)))


def test_image_tower_sees_exactly_a_quarter_of_the_patches():
    backbone = M3AEBackbone(**{k: v for k, v in SIZES.items() if k != "context_length"})
    lengths = Recorder(backbone.vision.blocks[0])
    images = torch.randn(3, 3, 32, 32)
    tokens, mask, ids_restore = backbone.encode_image(images, mask_ratio=0.75)
    assert backbone.vision.num_patches == 16
    assert tokens.shape == (3, 1 + 4, 32)
    assert lengths.calls[0][0][0].shape[1] == 1 + 4  # class token + visible patches only
    assert mask.sum(dim=1).tolist() == [12.0, 12.0, 12.0]
    assert sorted(ids_restore[0].tolist()) == list(range(16))
    full, full_mask, _ = backbone.encode_image(images)
    assert full.shape == (3, 17, 32) and full_mask.sum() == 0


def test_itm_pairs_make_half_the_rows_mismatched():
    for size in (2, 7, 16):
        labels, partner = itm_pairs(size, torch.Generator().manual_seed(size))
        assert int((labels == 0).sum()) == size // 2
        rows = torch.arange(size)
        assert torch.equal(partner[labels == 1], rows[labels == 1])
        assert bool((partner[labels == 0] != rows[labels == 0]).all())
        assert int(partner.min()) >= 0 and int(partner.max()) < size
    labels, partner = itm_pairs(1)
    assert labels.tolist() == [1] and partner.tolist() == [0]


def test_text_padding_changes_nothing():
    """Trimming ids to the batch's longest text is exact, and pads never reach the image stream."""
    system = pretrain_system().eval()
    backbone = system.backbone
    trimmed = system.tokenize(TEXTS[:2])
    full = system.tokenizer(TEXTS[:2])
    assert trimmed.shape[1] == len(TEXTS[0].encode()) + 2 < full.shape[1]
    with torch.no_grad():
        short, short_pad = backbone.encode_text(trimmed)
        long, long_pad = backbone.encode_text(full)
        real = ~short_pad
        assert torch.allclose(short[real], long[:, : trimmed.shape[1]][real], atol=1e-5)
        image, _, _ = backbone.encode_image(torch.randn(2, 3, 32, 32))
        noisy = long.clone()
        noisy[long_pad] = torch.randn_like(noisy[long_pad])
        image_a, _, _ = backbone.fuse(image, long, long_pad)
        image_b, _, _ = backbone.fuse(image, noisy, long_pad)
    assert torch.allclose(image_a, image_b, atol=1e-5)


def test_roberta_text_tower_from_a_config():
    backbone = M3AEBackbone(**{**SIZES, "text_backbone": "roberta", "vocab_size": 260})
    ids = build_tokenizer("multilingual", 64)(TEXTS[:2])[:, :40]
    tokens, padding = backbone.encode_text(ids)
    assert tokens.shape == (2, 40, 32) and padding.sum() > 0
    with pytest.raises(ValueError, match="text_backbone must be"):
        M3AEBackbone(**{**SIZES, "text_backbone": "bert"})


def test_joint_pass_losses_match_a_hand_computation():
    system = pretrain_system().eval()
    images, texts = batch()["image"], batch()["text"]
    size = len(texts)
    text_ids = Recorder(system.backbone.text)
    vision = Recorder(system.backbone.vision)
    fusion = Recorder(system.backbone.fusion[0])
    mlm = Recorder(system.mlm_head)
    pixels = Recorder(system.pixel_decoder)
    itm = Recorder(system.itm_head)
    with torch.no_grad():
        losses = system.compute_losses({"image": images, "text": texts}, "val")

    # the same draws, in the same order, as the system makes them
    generator = torch.Generator().manual_seed(EVAL_SEED)
    ids = system.tokenize(texts)
    masked, labels = whole_word_mask(ids, system.tokenizer, 0.15, generator)
    itm_labels, partner = itm_pairs(size, generator)

    # MLM: whole words labelled, the text tower read the masked ids, loss over labelled tokens
    assert torch.equal(text_ids.calls[0][0][0], masked)
    changed = masked != ids
    assert not bool((changed & (labels == IGNORE_INDEX)).any())
    for row in range(size):
        words = system.tokenizer.word_ids(ids[row].tolist())
        picked = {words[i] for i in range(ids.shape[1]) if labels[row, i] != IGNORE_INDEX}
        assert None not in picked and len(picked) >= 1
        for i, word in enumerate(words):
            assert (labels[row, i] != IGNORE_INDEX) == (word in picked)
    logits = mlm.calls[0][1]
    assert logits.shape[0] == int((labels != IGNORE_INDEX).sum())
    expected = F.cross_entropy(logits, labels[labels != IGNORE_INDEX])
    assert torch.allclose(losses["mlm"], expected, atol=1e-6)

    # one image-tower pass on the visible quarter; fusion rows = batch + ITM negatives
    assert len(vision.calls) == 1 and vision.calls[0][1][0].shape[1] == 1 + 4
    image_rows, text_rows, _ = fusion.calls[0][0]
    negatives = (itm_labels == 0).nonzero().squeeze(1)
    assert image_rows.shape[0] == text_rows.shape[0] == size + size // 2
    assert torch.equal(image_rows[size:], image_rows[partner[negatives]])
    assert torch.equal(text_rows[size:], text_rows[negatives])

    # MIM: per-patch normalised pixels, squared error averaged over the 75 % masked patches
    mask = vision.calls[0][1][1]
    assert mask.sum(dim=1).tolist() == [12.0] * size
    target = patchify(images, 8)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((pixels.calls[0][1] - target) ** 2).mean(-1)
    assert torch.allclose(losses["mim"], per_patch[mask == 1].mean(), atol=1e-6)

    # ITM: cross-entropy over the batch's rows against half-negative labels
    itm_logits = itm.calls[0][1]
    assert itm_logits.shape == (size, 2)
    assert torch.allclose(losses["itm"], F.cross_entropy(itm_logits, itm_labels), atol=1e-6)
    assert torch.allclose(losses["loss"], losses["mlm"] + losses["mim"] + losses["itm"])


def test_reference_passes_run_the_towers_three_times():
    system = pretrain_system(passes="reference")
    vision = Recorder(system.backbone.vision)
    fusion = Recorder(system.backbone.fusion[0])
    losses = system.compute_losses(batch(), "train")
    assert [call[1][0].shape[1] for call in vision.calls] == [17, 5, 17]
    assert [call[0][0].shape[0] for call in fusion.calls] == [6, 6, 6]
    losses["loss"].backward()
    assert system.pixel_decoder.decoder.predict.weight.grad.abs().sum() > 0
    assert system.mlm_head.decoder.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="passes must be"):
        pretrain_system(passes="both")


def test_optional_contrastive_loss_aligns_the_pooled_embeddings():
    """Off by default (M3AE has none); the reference passes apply it to whole images and clean
    text, exactly what ``encode_image`` / ``encode_text`` embed for retrieval."""
    assert "itc" not in pretrain_system().eval().compute_losses(batch(), "val")
    assert pretrain_system().logit_scale is None
    system = pretrain_system(passes="reference", loss_weights={"itc": 0.5}).eval()
    images, texts = batch()["image"], batch()["text"]
    with torch.no_grad():
        losses = system.compute_losses({"image": images, "text": texts}, "val")
        image_emb = F.normalize(system.encode_image(images), dim=-1)
        text_emb = F.normalize(system.encode_text(texts), dim=-1)
    logits = system.logit_scale() * image_emb @ text_emb.T
    target = torch.arange(len(texts))
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    assert torch.allclose(losses["itc"], expected, atol=1e-5)
    total = losses["mlm"] + losses["mim"] + losses["itm"] + 0.5 * losses["itc"]
    assert torch.allclose(losses["loss"], total, atol=1e-6)
    joint = pretrain_system(loss_weights={"itc": 1.0})
    joint.compute_losses(batch(), "train")["loss"].backward()
    assert joint.logit_scale.log_scale.grad is not None


def test_no_masking_reconstructs_every_patch():
    system = pretrain_system(image_mask_ratio=0.0).eval()
    vision = Recorder(system.backbone.vision)
    with torch.no_grad():
        losses = system.compute_losses(batch(2), "val")
    assert vision.calls[0][1][0].shape[1] == 17
    assert torch.isfinite(losses["mim"])


def test_vqa_loss_is_soft_target_bce_and_unknown_answers_are_all_negative():
    torch.manual_seed(0)
    system = M3AEVQASystem(classes=["yes", "no", "left"], **SIZES).eval()
    head = Recorder(system.head)
    answers = torch.tensor([0, 2, -1])
    with torch.no_grad():
        losses = system.compute_losses(
            {
                "image": torch.randn(3, 3, 32, 32),
                "question": ["Is there a cyst?", "Where is the lesion?", "What organ is shown?"],
                "answer_index": answers,
                "answer_type": ["closed", "open", "open"],
            },
            "val",
        )
    logits = head.calls[0][1]
    targets = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 0]])
    probabilities = logits.sigmoid()
    bce = -(targets * probabilities.log() + (1 - targets) * (1 - probabilities).log())
    assert torch.allclose(losses["loss"], bce.mean() * 3, atol=1e-5)


def test_vqa_accuracy_by_answer_type():
    metric = VQAAccuracy()
    metric.update(
        torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 2, -1]), ["closed"] * 2 + ["open"] * 2
    )
    metric.update(torch.tensor([5, 1]), torch.tensor([5, 1]), ["open", "closed"])
    result = {name: float(value) for name, value in metric.compute().items()}
    # closed: 0 ok, 1 wrong, 1 ok -> 2/3; open: 2 ok, -1 wrong (not in vocabulary), 5 ok -> 2/3
    assert result == pytest.approx({"overall": 4 / 6, "open": 2 / 3, "closed": 2 / 3})
    only_closed = VQAAccuracy()
    only_closed.update(torch.tensor([1]), torch.tensor([1]), ["closed"])
    assert set(only_closed.compute()) == {"overall", "closed"}
    with pytest.raises(ValueError, match="answer types"):
        only_closed.update(torch.tensor([1, 2]), torch.tensor([1, 2]), ["open"])


# -- the image tower from CLIP weights ---------------------------------------------------------

CLIP_SIZES = {**SIZES, "image_size": 64}


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A small open_clip model with random weights, saved as a user saves CLIP weights offline."""
    torch.manual_seed(1)
    model = open_clip.create_model("dvlm-tiny").eval()
    path = tmp_path_factory.mktemp("clip") / "dvlm-tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_pretraining_starts_the_image_tower_from_clip_weights(clip_weights):
    model, path = clip_weights
    system = pretrain_system(**CLIP_SIZES, vision_backbone=f"openclip:dvlm-tiny:{path}")
    vision = system.backbone.vision
    # sizes come from the open_clip config (width 128, 4 blocks), not from vision_width/depth
    assert vision.width == 128 and len(vision.blocks) == 4
    assert system.backbone.image_projection.in_features == 128
    reference = model.visual.state_dict()
    assert not torch.equal(vision.visual.conv1.weight, reference["conv1.weight"])  # not yet
    system.setup("fit")
    for name, value in vision.visual.state_dict().items():
        assert torch.equal(value, reference[name]), name
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _, clip_tokens = encode_with_patch_tokens(model.visual, images)
        tokens, _, _ = vision(images)
    assert torch.allclose(tokens[:, 1:], clip_tokens, atol=1e-5)
    # every tower weight that trains gets a gradient (DDP's default refuses unused parameters)
    data = {"image": torch.randn(4, 3, 64, 64), "text": TEXTS[:4]}
    system.compute_losses(data, "train")["loss"].backward()
    missing = [n for n, p in vision.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_rebuilding_a_checkpoint_never_reads_the_clip_weights(tmp_path):
    spec = f"openclip:dvlm-tiny:{tmp_path / 'gone.pt'}"
    system = pretrain_system(**CLIP_SIZES, vision_backbone=spec)  # load_system builds this way
    with pytest.raises(FileNotFoundError, match="gone.pt"):
        system.setup("fit")


def test_image_tower_specs_are_checked():
    with pytest.raises(ValueError, match="8-px patches, but patch=16"):
        M3AEBackbone(**{**CLIP_SIZES, "patch": 16, "vision_backbone": "openclip:dvlm-tiny"})
    with pytest.raises(ValueError, match="vision_backbone must be"):
        M3AEBackbone(**{**CLIP_SIZES, "vision_backbone": "dvlm-tiny"})
    with pytest.raises(ValueError, match="unknown model 'ViT-Nope'"):
        M3AEBackbone(**{**CLIP_SIZES, "vision_backbone": "openclip:ViT-Nope"})


def test_vqa_starts_from_a_clip_pretraining_run_at_another_image_size(clip_weights, tmp_path):
    _, path = clip_weights
    pretrain = pretrain_system(**CLIP_SIZES, vision_backbone=f"openclip:dvlm-tiny:{path}")
    pretrain.setup("fit")
    checkpoint = tmp_path / "pretrain.ckpt"
    torch.save(
        {
            "domainvlm": {"init_args": dict(pretrain.hparams)},
            "state_dict": pretrain.state_dict(),
        },
        checkpoint,
    )
    vqa_sizes = {**SIZES, "image_size": 96}
    vqa = M3AEVQASystem(
        classes=["yes"],
        init_from=str(checkpoint),
        vision_backbone="openclip:dvlm-tiny",
        **vqa_sizes,
    )
    vqa.setup("fit")  # the architecture matches; the weights come from the checkpoint
    source = pretrain.backbone.vision.visual
    tower = vqa.backbone.vision.visual
    assert tower.positional_embedding.shape == (1 + 12 * 12, 128)
    assert torch.equal(tower.conv1.weight, source.conv1.weight)
    assert torch.equal(
        vqa.backbone.fusion[0].image.mlp[0].weight, pretrain.backbone.fusion[0].image.mlp[0].weight
    )
    builtin = M3AEVQASystem(classes=["yes"], init_from=str(checkpoint), **vqa_sizes)
    with pytest.raises(CheckpointError, match="vision_backbone='openclip:dvlm-tiny:"):
        builtin.setup("fit")
    other_system = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.proj": torch.zeros(2)}}, other_system)
    with pytest.raises(CheckpointError, match="holds no weights under 'backbone.'"):
        vqa.load_backbone(str(other_system))
