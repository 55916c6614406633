"""Towers: open_clip builds and checkpoints, band adaptation, MAE pieces, clip pooling, DINO head."""

from __future__ import annotations

import copy
import json
import math
import string
from pathlib import Path

import open_clip
import pytest
import torch
from domainvlm.core.errors import CheckpointError
from domainvlm.core.towers.clip import (
    PretrainedUnavailableError,
    adapt_input_channels,
    build_clip,
    register_model_configs,
)
from domainvlm.core.towers.heads import ClassifierHead, DINOHead
from domainvlm.core.towers.mae import (
    MAEDecoder,
    MaskedViTEncoder,
    patchify,
    random_masking,
    sincos_pos_embed_2d,
    unpatchify,
)
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.core.towers.video import FramePoolingTower
from domainvlm.core.towers.vit_sizes import resample_positions
from safetensors.torch import save_file
from torch import nn

# -- open_clip dual encoders -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    model, preprocessing = build_clip("dvlm-tiny")
    return model.eval(), preprocessing


def _text_ids(batch: int, length: int = 96, eos: int = 259) -> torch.Tensor:
    ids = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        ids[row, : 5 + row] = torch.randint(1, 256, (5 + row,))
        ids[row, 5 + row] = eos
    return ids


def test_registering_configs_twice_changes_nothing() -> None:
    paths_before = list(open_clip.factory._MODEL_CONFIG_PATHS)
    assert "dvlm-tiny" in register_model_configs()
    assert paths_before == open_clip.factory._MODEL_CONFIG_PATHS
    config = open_clip.get_model_config("dvlm-tiny")
    vision, text = config["vision_cfg"], config["text_cfg"]
    assert (vision["image_size"], vision["patch_size"], vision["width"], vision["layers"]) == (
        64,
        8,
        128,
        4,
    )
    assert vision["width"] // vision["head_width"] == 4
    assert (text["vocab_size"], text["context_length"], text["width"], text["layers"]) == (
        260,
        96,
        128,
        4,
    )
    assert config["embed_dim"] == 128


def test_tiny_model_embeds_images_and_byte_token_ids(tiny: tuple[nn.Module, dict]) -> None:
    model, preprocessing = tiny
    assert preprocessing == {
        "image_size": 64,
        "mean": list(open_clip.OPENAI_DATASET_MEAN),
        "std": list(open_clip.OPENAI_DATASET_STD),
        "in_chans": 3,
    }
    with torch.no_grad():
        images = model.encode_image(torch.randn(2, 3, 64, 64))
        texts = model.encode_text(_text_ids(2))
    assert images.shape == texts.shape == (2, 128)
    assert model.visual.transformer.resblocks[0].attn.num_heads == 4


def test_tiny_text_tower_fits_the_byte_tokenizer(tiny: tuple[nn.Module, dict]) -> None:
    from domainvlm.core.tokenizers import ByteTokenizer

    model, _ = tiny
    tokenizer = ByteTokenizer(context_length=model.context_length)
    assert (model.vocab_size, model.context_length) == (tokenizer.vocab_size, 96)
    ids = tokenizer(["a satellite photo of a harbour", "海港的卫星照片", "foto de satélite"])
    # open_clip pools at argmax(id): that must be each caption's EOS.
    assert (ids.gather(1, ids.argmax(dim=1, keepdim=True)) == ByteTokenizer.EOS).all()
    with torch.no_grad():
        embeddings = model.encode_text(ids)
    assert embeddings.shape == (3, 128)
    assert not torch.allclose(embeddings[0], embeddings[1])


def test_extra_zero_bands_leave_the_rgb_embedding_unchanged(tiny: tuple[nn.Module, dict]) -> None:
    model, _ = tiny
    rgb = torch.randn(2, 3, 64, 64)
    adapted = adapt_input_channels(copy.deepcopy(model), 4)
    sentinel = adapt_input_channels(copy.deepcopy(model), 13, rgb_indices=(3, 2, 1))
    thirteen = torch.zeros(2, 13, 64, 64)
    thirteen[:, [3, 2, 1]] = rgb
    with torch.no_grad():
        expected = model.encode_image(rgb)
        four = adapted.encode_image(torch.cat([rgb, torch.zeros(2, 1, 64, 64)], dim=1))
        assert torch.allclose(four, expected, atol=1e-5)
        assert torch.allclose(sentinel.encode_image(thirteen), expected, atol=1e-5)


def test_extra_bands_together_weigh_like_one_mean_rgb_channel(
    tiny: tuple[nn.Module, dict],
) -> None:
    rgb_conv = tiny[0].visual.conv1
    mean_filter = rgb_conv.weight.mean(dim=1, keepdim=True)
    band = torch.randn(1, 1, 64, 64)
    for in_chans in (4, 13):
        conv = adapt_input_channels(copy.deepcopy(tiny[0]), in_chans).visual.conv1
        assert conv.weight.shape[1] == in_chans
        assert torch.equal(conv.weight[:, :3], rgb_conv.weight)
        extra_only = torch.zeros(1, in_chans, 64, 64)
        extra_only[:, 3:] = band
        with torch.no_grad():
            response = conv(extra_only)
            expected = nn.functional.conv2d(band, mean_filter, stride=8)
        assert torch.allclose(response, expected, atol=1e-5)


def test_single_band_embeds_like_the_grey_rgb_image(tiny: tuple[nn.Module, dict]) -> None:
    model, _ = tiny
    grey = torch.randn(2, 1, 64, 64)
    adapted = adapt_input_channels(copy.deepcopy(model), 1)
    with torch.no_grad():
        expected = model.encode_image(grey.expand(-1, 3, -1, -1))
        assert torch.allclose(adapted.encode_image(grey), expected, atol=1e-5)


def test_adapt_rejects_bad_band_layouts(tiny: tuple[nn.Module, dict]) -> None:
    with pytest.raises(ValueError, match="1 or at least 3"):
        adapt_input_channels(copy.deepcopy(tiny[0]), 2)
    with pytest.raises(ValueError, match="out of range"):
        adapt_input_channels(copy.deepcopy(tiny[0]), 4, rgb_indices=(0, 1, 4))
    adapted = adapt_input_channels(copy.deepcopy(tiny[0]), 4)
    with pytest.raises(ValueError, match="expected an RGB patch embedding"):
        adapt_input_channels(adapted, 5)


def test_build_with_bands_and_size_reports_matching_preprocessing() -> None:
    model, preprocessing = build_clip("dvlm-tiny", in_chans=4, image_size=96)
    assert model.visual.conv1.in_channels == 4
    assert preprocessing["image_size"] == 96 and preprocessing["in_chans"] == 4
    rgb_mean = list(open_clip.OPENAI_DATASET_MEAN)
    assert preprocessing["mean"] == pytest.approx(rgb_mean + [sum(rgb_mean) / 3])
    assert len(preprocessing["std"]) == 4
    with torch.no_grad():
        assert model.encode_image(torch.randn(1, 4, 96, 96)).shape == (1, 128)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_file_loads_every_weight(
    tiny: tuple[nn.Module, dict], tmp_path: Path, suffix: str
) -> None:
    state = {key: value.contiguous() for key, value in tiny[0].state_dict().items()}
    path = tmp_path / f"remoteclip-like{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file(state, path)
    loaded, _ = build_clip("dvlm-tiny", pretrained=str(path))
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_rgb_checkpoint_into_multiband_model_keeps_rgb_filters(
    tiny: tuple[nn.Module, dict], tmp_path: Path
) -> None:
    path = tmp_path / "rgb.pt"
    torch.save(tiny[0].state_dict(), path)
    loaded, _ = build_clip("dvlm-tiny", pretrained=str(path), in_chans=4, image_size=96)
    assert torch.equal(loaded.visual.conv1.weight[:, :3], tiny[0].visual.conv1.weight)
    assert loaded.visual.positional_embedding.shape[0] == (96 // 8) ** 2 + 1
    assert torch.equal(loaded.token_embedding.weight, tiny[0].token_embedding.weight)


def test_multiband_checkpoint_round_trips(tmp_path: Path) -> None:
    model, _ = build_clip("dvlm-tiny", in_chans=4)
    path = tmp_path / "four_band.pt"
    torch.save(model.state_dict(), path)
    loaded, _ = build_clip("dvlm-tiny", pretrained=str(path), in_chans=4)
    assert torch.equal(loaded.visual.conv1.weight, model.visual.conv1.weight)


def test_bad_checkpoints_name_the_file(tiny: tuple[nn.Module, dict], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        build_clip("dvlm-tiny", pretrained=str(garbage))
    other = tmp_path / "other_model.pt"
    state = tiny[0].state_dict()
    state.pop("text_projection")
    torch.save(state, other)
    with pytest.raises(CheckpointError, match="other_model.pt"):
        build_clip("dvlm-tiny", pretrained=str(other))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_clip("dvlm-tiny", pretrained=str(tmp_path / "missing.safetensors"))


def test_unknown_names_and_tags_are_refused_without_downloading() -> None:
    with pytest.raises(ValueError, match="unknown model 'no-such-model'"):
        build_clip("no-such-model")
    with pytest.raises(ValueError, match="laion2b_s34b_b79k"):
        build_clip("ViT-B-32", pretrained="no_such_tag")
    with pytest.raises(ValueError, match="its tags: none"):
        build_clip("dvlm-tiny", pretrained="openai")


def test_offline_tag_download_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise RuntimeError("Name or service not known")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(PretrainedUnavailableError, match=r"pretrained=<that file>") as error:
        build_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")
    assert "laion2b_s34b_b79k" in str(error.value)
    assert "HF_HUB_OFFLINE" in str(error.value)


def test_offline_hub_id_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> dict:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip.factory, "_get_hf_config", offline)
    with pytest.raises(PretrainedUnavailableError, match="local-dir:"):
        build_clip("hf-hub:joaodaniel/RS-M-CLIP")


# -- Hugging Face text towers ------------------------------------------------------------------


def _tiny_xlmr_folder(folder: Path, with_weights: bool) -> Path:
    """A 2-layer XLM-RoBERTa-shaped text model with a tiny Unigram vocabulary."""
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizer

    specials = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [(char, -1.0) for char in "▁" + string.ascii_letters + string.digits + ".,éü"]
    tokenizer = XLMRobertaTokenizer(vocab=specials + pieces + [("<mask>", 0.0)])
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=100,
        pad_token_id=tokenizer.pad_token_id,
    )
    tokenizer.save_pretrained(folder)
    if with_weights:
        torch.manual_seed(1)
        XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    return folder


def test_hf_text_tower_builds_offline_from_a_local_folder(tmp_path: Path) -> None:
    from transformers import XLMRobertaModel

    folder = _tiny_xlmr_folder(tmp_path / "xlmr-tiny", with_weights=True)
    model, preprocessing = build_clip(
        "xlm-roberta-base-ViT-B-32", hf_text_dir=folder, image_size=64
    )
    saved = XLMRobertaModel.from_pretrained(folder, add_pooling_layer=False).state_dict()
    for key, value in model.text.transformer.state_dict().items():
        assert torch.equal(value, saved[key]), key
    tokenizer = open_clip.tokenizer.HFTokenizer(str(folder), context_length=16)
    ids = tokenizer(["a photo of Köln", "ein Foto"])
    assert ids.shape == (2, 16) and (ids == tokenizer.tokenizer.pad_token_id).any()
    with torch.no_grad():
        texts = model.eval().encode_text(ids)
        images = model.encode_image(torch.randn(2, 3, 64, 64))
    assert texts.shape == images.shape == (2, 512)
    assert preprocessing["image_size"] == 64
    assert json.loads((folder / "config.json").read_text())["model_type"] == "xlm-roberta"


def test_hf_text_folder_problems_are_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_clip("xlm-roberta-base-ViT-B-32", hf_text_dir=tmp_path)
    with pytest.raises(ValueError, match="no Hugging Face text tower"):
        build_clip("dvlm-tiny", hf_text_dir=tmp_path)


def test_hf_text_tower_without_folder_offline_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip.hf_model.AutoConfig, "from_pretrained", offline)
    with pytest.raises(PretrainedUnavailableError, match="hf_text_dir=<that folder>"):
        build_clip("xlm-roberta-base-ViT-B-32", image_size=64)


# -- masked autoencoding -----------------------------------------------------------------------


def test_patchify_orders_patches_row_major_and_unpatchify_inverts_it() -> None:
    images = torch.randn(2, 3, 16, 24)
    patches = patchify(images, 8)
    assert patches.shape == (2, 6, 8 * 8 * 3)
    # Patch 4 is row 1, column 1; its vector is (row, col, band) flattened.
    assert torch.equal(patches[1, 4], images[1, :, 8:16, 8:16].permute(1, 2, 0).reshape(-1))
    assert torch.equal(unpatchify(patches, 8, 3, grid=(2, 3)), images)
    square = torch.randn(1, 4, 32, 32)
    assert torch.equal(unpatchify(patchify(square, 4), 4, 4), square)


def test_sincos_positions_match_the_formula() -> None:
    dim, grid = 16, (3, 5)
    positions = sincos_pos_embed_2d(dim, grid)
    assert positions.shape == (15, 16)
    row, col, i = 2, 4, 1  # patch 2*5+4 = 14; frequency index 1 of 4 per half
    omega = 1 / 10000 ** (i / 4)
    patch = positions[row * 5 + col]
    assert patch[i].item() == pytest.approx(math.sin(row * omega), abs=1e-6)
    assert patch[4 + i].item() == pytest.approx(math.cos(row * omega), abs=1e-6)
    assert patch[8 + i].item() == pytest.approx(math.sin(col * omega), abs=1e-6)
    assert patch[12 + i].item() == pytest.approx(math.cos(col * omega), abs=1e-6)
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_pos_embed_2d(6, 2)


@pytest.mark.parametrize(("count", "ratio"), [(49, 0.75), (64, 0.75), (10, 0.15), (16, 0.5)])
def test_random_masking_keeps_exactly_round_n_times_one_minus_ratio(
    count: int, ratio: float
) -> None:
    tokens = torch.randn(3, count, 4)
    visible, mask, ids_restore = random_masking(tokens, ratio)
    keep = round(count * (1 - ratio))
    assert visible.shape == (3, keep, 4)
    assert (mask.sum(dim=1) == count - keep).all()
    for row in range(3):
        # The visible tokens are exactly the unmasked ones, and ids_restore undoes the shuffle.
        unmasked = set(torch.nonzero(mask[row] == 0).flatten().tolist())
        kept = {tuple(t.tolist()) for t in visible[row]}
        assert kept == {tuple(tokens[row, i].tolist()) for i in unmasked}
        padded = torch.cat([visible[row], torch.zeros(count - keep, 4)])
        restored = padded[ids_restore[row]]
        assert torch.equal(restored[mask[row] == 0], tokens[row, mask[row] == 0])


def test_random_masking_is_deterministic_with_a_generator() -> None:
    tokens = torch.randn(2, 16, 8)
    first = random_masking(tokens, 0.75, torch.Generator().manual_seed(7))
    second = random_masking(tokens, 0.75, torch.Generator().manual_seed(7))
    other = random_masking(tokens, 0.75, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[1], other[1])
    visible, mask, ids_restore = random_masking(tokens, 0.0)
    assert torch.equal(visible, tokens) and not mask.any()
    assert torch.equal(ids_restore[1], torch.arange(16))


def test_encoder_blocks_see_only_visible_patches() -> None:
    encoder = MaskedViTEncoder.from_sizes(image_size=32, patch=4, width=32, depth=3, heads=4)
    lengths: list[int] = []
    for block in encoder.blocks:
        block.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    tokens, mask, ids_restore = encoder(torch.randn(2, 3, 32, 32), mask_ratio=0.75)
    keep = round(64 * 0.25)
    assert lengths == [1 + keep] * 3
    assert tokens.shape == (2, 1 + keep, 32)
    assert mask.shape == ids_restore.shape == (2, 64)
    lengths.clear()
    tokens, mask, _ = encoder(torch.randn(2, 3, 32, 32))
    assert lengths == [65] * 3 and tokens.shape == (2, 65, 32) and not mask.any()


def test_encoder_masks_reproducibly_and_checks_its_input() -> None:
    encoder = MaskedViTEncoder.from_sizes(
        image_size=16, patch=4, in_chans=4, width=16, depth=2, heads=2
    )
    images = torch.randn(2, 4, 16, 16)
    first = encoder(images, 0.5, torch.Generator().manual_seed(0))
    again = encoder(images, 0.5, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert first[0].shape == (2, 1 + 8, 16) and encoder.visual.conv1.in_channels == 4
    with pytest.raises(ValueError, match=r"expected images \[B, 4, 16, 16\]"):
        encoder(torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="not a multiple of patch"):
        MaskedViTEncoder.from_sizes(image_size=18, patch=4, width=16, depth=1, heads=2)


def test_visible_patches_keep_the_positions_of_where_they_were() -> None:
    """A masked pass equals an unmasked pass over just the kept patches, in their places."""
    torch.manual_seed(0)
    # No blocks: every token is then a function of its own patch and position only.
    encoder = MaskedViTEncoder.from_sizes(image_size=16, patch=4, width=16, depth=0, heads=2)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        full, _, _ = encoder(images)
        masked, mask, ids_restore = encoder(images, 0.75, torch.Generator().manual_seed(3))
    kept = ids_restore.argsort(dim=1)[:, :4]
    for row in range(2):
        assert torch.allclose(masked[row, 1:], full[row, 1 + kept[row]], atol=1e-6)
        assert mask[row, kept[row]].sum() == 0
    assert torch.allclose(masked[:, 0], full[:, 0], atol=1e-6)


@pytest.fixture(scope="module")
def openclip_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A small open_clip ViT with random weights, saved as a user saves CLIP weights offline."""
    torch.manual_seed(0)
    model = open_clip.create_model("dvlm-tiny").eval()
    path = tmp_path_factory.mktemp("openclip") / "dvlm-tiny.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_masked_encoder_loads_open_clip_weights_and_runs_as_open_clip(openclip_weights) -> None:
    model, path = openclip_weights
    encoder = MaskedViTEncoder.from_openclip("dvlm-tiny", str(path)).eval()
    reference = model.visual.state_dict()
    ours = encoder.visual.state_dict()
    assert set(reference) - set(ours) == {"proj"}  # M3AE reads tokens, not the CLIP embedding
    for name, value in ours.items():
        assert torch.equal(value, reference[name]), name
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled, tokens = encode_with_patch_tokens(model.visual, images)
        ours_tokens, mask, _ = encoder(images)
    assert not mask.any() and ours_tokens.shape == (2, 1 + 64, 128)
    assert torch.allclose(ours_tokens[:, 1:], tokens, atol=1e-5)
    assert torch.allclose(ours_tokens[:, 0] @ model.visual.proj, pooled, atol=1e-5)
    with torch.no_grad():
        visible, mask, _ = encoder(images, 0.75)
    assert visible.shape == (2, 1 + 16, 128) and mask.sum() == 2 * 48


def test_position_grids_are_resampled_to_the_image_size(openclip_weights) -> None:
    model, path = openclip_weights
    encoder = MaskedViTEncoder.from_openclip("dvlm-tiny", str(path))
    larger = MaskedViTEncoder.from_openclip("dvlm-tiny", None, image_size=96)
    larger.load_state_dict(encoder.state_dict())  # pretraining at 64 px, fine-tuning at 96
    expected = resample_positions(model.visual.positional_embedding.detach(), (12, 12))
    assert torch.equal(larger.visual.positional_embedding, expected)
    assert torch.equal(larger.visual.conv1.weight, model.visual.conv1.weight)
    assert larger(torch.randn(1, 3, 96, 96))[0].shape == (1, 1 + 144, 128)
    # Fixed sin-cos positions are computed for each grid, never interpolated.
    small = MaskedViTEncoder.from_sizes(image_size=16, patch=4, width=16, depth=1, heads=2)
    big = MaskedViTEncoder.from_sizes(image_size=32, patch=4, width=16, depth=1, heads=2)
    own = big.visual.positional_embedding.clone()
    big.load_state_dict(small.state_dict())
    assert torch.equal(big.visual.positional_embedding, own)
    assert torch.equal(big.visual.class_embedding, small.visual.class_embedding)


def test_masked_encoder_refuses_towers_it_cannot_mask() -> None:
    with pytest.raises(ValueError, match="open_clip ViT with a class token"):
        MaskedViTEncoder(nn.Linear(2, 2), fixed_positions=False)


def test_decoder_puts_visible_and_mask_tokens_at_their_patches() -> None:
    torch.manual_seed(0)
    encoder = MaskedViTEncoder.from_sizes(image_size=16, patch=4, width=24, depth=1, heads=2)
    decoder = MAEDecoder(num_patches=16, patch=4, in_chans=3, enc_width=24, dec_width=16, depth=0)
    tokens, mask, ids_restore = encoder(torch.randn(2, 3, 16, 16), mask_ratio=0.75)
    predicted = decoder(tokens, ids_restore)
    assert predicted.shape == (2, 16, 4 * 4 * 3)
    ids_shuffle = ids_restore.argsort(dim=1)
    with torch.no_grad():
        for row in range(2):
            for slot in range(4):  # visible token ``slot`` came from patch ids_shuffle[slot]
                position = ids_shuffle[row, slot].item()
                hidden = decoder.embed(tokens[row, 1 + slot]) + decoder.pos_embed[0, 1 + position]
                expected = decoder.predict(decoder.norm(hidden))
                assert torch.allclose(predicted[row, position], expected, atol=1e-6)
            for position in torch.nonzero(mask[row]).flatten().tolist():
                hidden = decoder.mask_token[0, 0] + decoder.pos_embed[0, 1 + position]
                expected = decoder.predict(decoder.norm(hidden))
                assert torch.allclose(predicted[row, position], expected, atol=1e-6)
    full = MAEDecoder(num_patches=16, patch=4, in_chans=3, enc_width=24, dec_width=16, heads=2)
    assert full(tokens, ids_restore).shape == (2, 16, 48)


# -- video clips -------------------------------------------------------------------------------


class _FrameEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 8 * 8, 6)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(frames.flatten(1))


def test_mean_pooling_is_the_mean_of_frame_embeddings() -> None:
    encoder = FramePoolingTower(_FrameEncoder(), pooling="mean")
    clips = torch.randn(2, 4, 3, 8, 8)
    with torch.no_grad():
        per_frame = torch.stack(
            [torch.stack([encoder.frame_encoder(f[None])[0] for f in clip]) for clip in clips]
        )
        assert torch.allclose(encoder(clips), per_frame.mean(dim=1), atol=1e-6)


def test_attention_pooling_starts_as_mean_and_learns_weights() -> None:
    encoder = FramePoolingTower(_FrameEncoder(), pooling="attention", embed_dim=6)
    clips = torch.randn(2, 4, 3, 8, 8)
    with torch.no_grad():
        frames = encoder.encode_frames(clips)
        assert torch.allclose(encoder(clips), frames.mean(dim=1), atol=1e-6)
        encoder.scorer.weight.normal_()
        weights = torch.softmax(frames @ encoder.scorer.weight[0] + encoder.scorer.bias, dim=1)
        expected = (weights.unsqueeze(-1) * frames).sum(dim=1)
        assert torch.allclose(encoder(clips), expected, atol=1e-6)
    with pytest.raises(ValueError, match="embed_dim"):
        FramePoolingTower(_FrameEncoder(), pooling="attention")
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        encoder(torch.randn(4, 3, 8, 8))


# -- DINO head ---------------------------------------------------------------------------------


def test_dino_head_outputs_cosines_to_unit_prototypes() -> None:
    torch.manual_seed(0)
    head = DINOHead(in_dim=12, out_dim=20, hidden=32, bottleneck=8)
    assert len([m for m in head.mlp if isinstance(m, nn.Linear)]) == 3
    features = torch.randn(5, 12)
    with torch.no_grad():
        bottleneck = nn.functional.normalize(head.mlp(features), dim=-1)
        direction = head.last_layer.parametrizations.weight.original1
        prototypes = direction / direction.norm(dim=1, keepdim=True)
        expected = bottleneck @ prototypes.T
        output = head(features)
    assert output.shape == (5, 20)
    assert torch.allclose(output, expected, atol=1e-6)
    assert output.abs().max() <= 1 + 1e-6


def test_dino_head_gain_stays_fixed_at_one_while_directions_train() -> None:
    head = DINOHead(in_dim=12, out_dim=20, hidden=32, bottleneck=8)
    gain = head.last_layer.parametrizations.weight.original0
    direction = head.last_layer.parametrizations.weight.original1
    before = direction.detach().clone()
    optimizer = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=0.1)
    head(torch.randn(5, 12)).pow(2).sum().backward()
    optimizer.step()
    assert not gain.requires_grad and torch.equal(gain, torch.ones_like(gain))
    assert not torch.equal(direction, before)


def test_dino_head_copies_for_an_ema_teacher_and_allows_one_layer() -> None:
    student = DINOHead(in_dim=12, out_dim=20, hidden=32, bottleneck=8, nlayers=1)
    assert isinstance(student.mlp[0], nn.Linear) and len(student.mlp) == 1
    teacher = copy.deepcopy(student)
    features = torch.randn(3, 12)
    with torch.no_grad():
        assert torch.equal(teacher(features), student(features))
        teacher.load_state_dict(student.state_dict())
    trainable = DINOHead(12, 20, 32, 8, norm_last_layer=False)
    assert trainable.last_layer.parametrizations.weight.original0.requires_grad


def test_classifier_head_is_linear_norm_gelu_linear() -> None:
    torch.manual_seed(0)
    head = ClassifierHead(6, 4)
    features = torch.randn(5, 6)
    first, norm, _, last = head.layers
    assert (first.in_features, first.out_features, last.out_features) == (6, 12, 4)
    expected = last(nn.functional.gelu(norm(first(features))))
    assert torch.allclose(head(features), expected)
    assert ClassifierHead(6, 4, hidden=7).layers[0].out_features == 7
