"""Image-text dual encoders built with open_clip, from a model name plus where the weights live.

``pretrained`` may be an OpenCLIP tag (downloaded, or found in the Hugging Face cache), a local
checkpoint file, or absent (random init: the offline default); the model name may also be an
``hf-hub:`` id or ``local-dir:`` folder. Nothing is downloaded unless the caller asked for a tag or a
hub id, and a failed download says how to get the weights onto an offline machine.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
from domainvlm.core.errors import CheckpointError, DomainVLMError
from torch import nn

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
OPENCLIP_PREFIX = "openclip:"


class PretrainedUnavailableError(DomainVLMError, RuntimeError):
    """Weights or configs that must come from the internet could not be fetched."""


def register_model_configs(config_dir: Path = MODEL_CONFIG_DIR) -> list[str]:
    """Make our JSON model configs known to open_clip; calling it again changes nothing."""
    names = sorted(path.stem for path in config_dir.glob("*.json"))
    if not set(names) <= set(open_clip.list_models()):
        open_clip.add_model_config(config_dir)
    return names


register_model_configs()


def split_openclip_spec(spec: str) -> tuple[str, str | None]:
    """``openclip:<model>[:<tag or weights file>]`` → ``(model, tag or file or None)``."""
    model_name, _, pretrained = spec.removeprefix(OPENCLIP_PREFIX).partition(":")
    if not spec.startswith(OPENCLIP_PREFIX) or not model_name:
        raise ValueError(f"expected openclip:<model>[:<tag or weights file>], got {spec!r}")
    return model_name, pretrained or None


def build_clip(
    model_name: str,
    pretrained: str | None = None,
    in_chans: int = 3,
    image_size: int | None = None,
    hf_text_dir: str | Path | None = None,
) -> tuple[nn.Module, dict]:
    """Build an open_clip model and the preprocessing its image tower expects.

    Args:
        model_name: an open_clip or domainvlm config name (``dvlm-tiny``, ``ViT-B-32``,
            ``xlm-roberta-base-ViT-B-32``), an ``hf-hub:org/repo`` id or a ``local-dir:`` folder.
        pretrained: an OpenCLIP tag (``laion2b_s34b_b79k``), a local state-dict file
            (``.pt``/``.bin``/``.safetensors``, loaded with ``weights_only=True``), or ``None``.
        in_chans: input bands; other than 3 adapts the patch embedding (``adapt_input_channels``).
        image_size: overrides the config's input size (position embeddings are interpolated).
        hf_text_dir: a local Hugging Face folder (``config.json`` + tokenizer files, optionally
            weights) used instead of the hub for models with an HF text tower.

    Returns:
        ``(model, preprocessing)`` with preprocessing ``{"image_size", "mean", "std", "in_chans"}``.
    """
    if in_chans < 1:
        raise ValueError(f"in_chans must be at least 1, got {in_chans}")
    schema = model_name.split(":", 1)[0] if ":" in model_name else None
    if schema is None:
        model_name = model_name.replace("/", "-")  # open_clip's spelling: ViT-B/32 is ViT-B-32
    checkpoint = _local_checkpoint(pretrained)
    tag = pretrained if pretrained is not None and checkpoint is None else None
    config = open_clip.get_model_config(model_name) if schema is None else None
    if schema is None and config is None:
        raise ValueError(
            f"unknown model {model_name!r}: not an open_clip or domainvlm config. Known models: "
            f"{', '.join(open_clip.list_models())}"
        )
    if tag is not None:
        _check_tag(model_name, tag)
    overrides = {}
    if hf_text_dir is not None:
        overrides["text_cfg"] = _local_hf_text_cfg(
            model_name, config, Path(hf_text_dir), pretrained
        )
    needs_hub = tag is not None or schema == "hf-hub" or _needs_hf_text_download(config, overrides)
    try:
        with _quiet_random_init():
            model = open_clip.create_model(
                model_name,
                pretrained=tag,
                force_image_size=image_size,
                pretrained_text=pretrained is None,
                **overrides,
            )
    except (OSError, RuntimeError) as error:
        if not needs_hub:
            raise
        raise PretrainedUnavailableError(_download_advice(model_name, tag, error)) from error
    if checkpoint is not None:
        _load_checkpoint(model, checkpoint, in_chans)
    if in_chans != 3 and _patch_embedding(model)[1].in_channels != in_chans:
        adapt_input_channels(model, in_chans)
    return model, _preprocessing(model, in_chans)


@contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning: weights usually load right after."""

    def keep(record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def adapt_input_channels(
    model: nn.Module, in_chans: int, rgb_indices: Sequence[int] = (0, 1, 2)
) -> nn.Module:
    """Let a pretrained RGB image tower take ``in_chans`` bands (RGB+NIR, Sentinel-2's 13, ...).

    The RGB filters are kept exactly at ``rgb_indices`` (a Sentinel-2 stack holds B4, B3, B2 at
    3, 2, 1), so an image whose extra bands are zero embeds exactly as before. Each extra band gets
    the mean RGB filter divided by the number of extra bands: together they weigh like one more RGB
    channel, so 1 or 10 extra bands move activations by the same bounded amount. A single band
    (greyscale) gets the sum of the RGB filters, so it embeds like the grey RGB image.
    """
    name, conv = _patch_embedding(model)
    if conv.in_channels != 3:
        raise ValueError(f"expected an RGB patch embedding, {name} takes {conv.in_channels} bands")
    with torch.no_grad():
        weight = _expand_rgb_filters(conv.weight, in_chans, list(rgb_indices))
    new_conv = nn.Conv2d(
        in_chans,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new_conv.weight.copy_(weight)
        if conv.bias is not None:
            new_conv.bias.copy_(conv.bias)
    parent_name, _, child_name = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child_name, new_conv)
    return model


def _expand_rgb_filters(rgb: torch.Tensor, in_chans: int, rgb_indices: list[int]) -> torch.Tensor:
    if in_chans == 1:
        return rgb.sum(dim=1, keepdim=True)
    if in_chans < 3:
        raise ValueError(f"cannot adapt RGB filters to {in_chans} bands: use 1 or at least 3")
    if len(set(rgb_indices)) != 3 or len(rgb_indices) != 3:
        raise ValueError(f"rgb_indices must name 3 distinct bands, got {rgb_indices}")
    if not all(0 <= index < in_chans for index in rgb_indices):
        raise ValueError(f"rgb_indices {rgb_indices} out of range for {in_chans} bands")
    shape = (rgb.shape[0], in_chans, *rgb.shape[2:])
    weight = torch.empty(shape, dtype=rgb.dtype, device=rgb.device)
    weight[:, rgb_indices] = rgb
    extra = [band for band in range(in_chans) if band not in rgb_indices]
    if extra:
        weight[:, extra] = rgb.mean(dim=1, keepdim=True) / len(extra)
    return weight


def _patch_embedding(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution of the image tower: ViT patch embedding or ResNet stem."""
    prefix = "visual." if hasattr(model, "visual") else ""
    tower = model.visual if prefix else model
    for name, module in tower.named_modules():
        if isinstance(module, nn.Conv2d):
            return prefix + name, module
    raise ValueError(f"{type(tower).__name__} has no Conv2d patch embedding to adapt")


def _local_checkpoint(pretrained: str | None) -> Path | None:
    """``pretrained`` as a file path, or ``None`` if it names a tag; refuses missing paths."""
    if pretrained is None:
        return None
    path = Path(pretrained).expanduser()
    looks_like_path = (
        os.sep in pretrained or "/" in pretrained or path.suffix in CHECKPOINT_SUFFIXES
    )
    if path.is_file():
        return path
    if path.is_dir():
        raise FileNotFoundError(
            f"pretrained={pretrained!r} is a folder; pass the checkpoint file inside it, or pass "
            f"model_name='local-dir:{pretrained}' for a folder with open_clip_config.json"
        )
    if looks_like_path:
        raise FileNotFoundError(f"pretrained checkpoint file {pretrained!r} does not exist")
    return None


def _check_tag(model_name: str, tag: str) -> None:
    if ":" in model_name:
        raise ValueError(
            f"pretrained={tag!r} cannot be combined with {model_name!r}: hub ids and local-dir "
            "folders carry their own weights"
        )
    if not open_clip.get_pretrained_cfg(model_name, tag):
        known = ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"
        raise ValueError(
            f"pretrained={tag!r} is neither an existing file nor an OpenCLIP tag of {model_name!r} "
            f"(its tags: {known})"
        )


def _local_hf_text_cfg(
    model_name: str, config: dict | None, folder: Path, pretrained: str | None
) -> dict:
    """The text config with its HF model and tokenizer pointed at a local folder."""
    text_cfg = dict((config or {}).get("text_cfg", {}))
    if "hf_model_name" not in text_cfg:
        raise ValueError(f"hf_text_dir given, but {model_name!r} has no Hugging Face text tower")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"hf_text_dir {str(folder)!r} has no config.json: save one there with "
            f"AutoConfig.from_pretrained({text_cfg['hf_model_name']!r}).save_pretrained(...) "
            "on a connected machine"
        )
    has_weights = any((folder / name).is_file() for name in HF_WEIGHT_FILES)
    text_cfg["hf_model_name"] = str(folder)
    text_cfg["hf_tokenizer_name"] = str(folder)
    # A full CLIP checkpoint overwrites the text tower anyway: skip reading the HF weights.
    text_cfg["hf_model_pretrained"] = has_weights and pretrained is None
    return text_cfg


def _needs_hf_text_download(config: dict | None, overrides: dict) -> bool:
    text_cfg = overrides.get("text_cfg") or (config or {}).get("text_cfg", {})
    name = text_cfg.get("hf_model_name")
    return bool(name) and not Path(name).is_dir()


def _download_advice(model_name: str, tag: str | None, error: Exception) -> str:
    if tag is not None:
        what = f"OpenCLIP weights {model_name!r} / {tag!r}"
        fix = (
            f"On a machine with internet run open_clip.create_model({model_name!r}, "
            f"pretrained={tag!r}) and save model.state_dict() with torch.save, then pass "
            "pretrained=<that file> here (or copy the Hugging Face cache across)."
        )
    elif model_name.startswith("hf-hub:"):
        what = f"the Hugging Face Hub model {model_name!r}"
        fix = (
            f"On a machine with internet download the repository {model_name[7:]!r} "
            "(huggingface-cli download ...) and pass model_name='local-dir:<that folder>'."
        )
    else:
        what = f"the Hugging Face text tower config of {model_name!r}"
        fix = (
            "On a machine with internet save AutoConfig and AutoTokenizer of that text model "
            "(and AutoModel for its weights) with save_pretrained into one folder, then pass "
            "hf_text_dir=<that folder>."
        )
    return (
        f"could not fetch {what}; this machine may be offline (set HF_HUB_OFFLINE=1 to fail "
        f"fast). {fix} Cause: {error}"
    )


def _load_checkpoint(model: nn.Module, path: Path, in_chans: int) -> None:
    """Load a local open_clip state dict; a multi-band checkpoint is adapted to before loading."""
    if in_chans != 3:
        conv_name, _ = _patch_embedding(model)
        try:
            state = open_clip.factory.load_state_dict(str(path), weights_only=True)
        except Exception as error:
            raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {error}") from error
        weight = state.get(f"{conv_name}.weight")
        if weight is not None and weight.shape[1] == in_chans:
            adapt_input_channels(model, in_chans)
    try:
        open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit {type(model).__name__} as configured "
            f"(wrong model name, or not an open_clip state dict?): {error}"
        ) from error


def _preprocessing(model: nn.Module, in_chans: int) -> dict:
    """Per-band mean/std: the RGB values of the weights, their average for other bands.

    Domains with band statistics of their own (16-bit reflectance, ...) should override these.
    """
    config = open_clip.get_model_preprocess_cfg(model)
    size = config.get("size", model.visual.image_size)
    if isinstance(size, Sequence):
        size = size[0] if size[0] == size[1] else list(size)
    mean, std = [float(v) for v in config["mean"]], [float(v) for v in config["std"]]
    if in_chans == 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    extra = in_chans - len(mean)
    if extra > 0:
        mean += [sum(mean) / len(mean)] * extra
        std += [sum(std) / len(std)] * extra
    return {
        "image_size": size,
        "mean": mean[:in_chans],
        "std": std[:in_chans],
        "in_chans": in_chans,
    }
