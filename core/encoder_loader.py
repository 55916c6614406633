"""Turn one spec string into an ``Encoder``: a domainvlm checkpoint or any open_clip model.

Specs: a checkpoint path (``run/last.ckpt``), ``openclip:<model>[:<tag or weights file>]``,
``hf-hub:<org/repo>`` or ``local-dir:<folder>``. ``Encoder.name`` is always a spec that rebuilds
the same encoder (paths made absolute), so a knowledge base can record it as provenance and
``kb search`` can rebuild its encoder from the manifest alone; identity is the weights' hash
(``Encoder.identity``), so the same weights under another path are the same encoder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

import open_clip
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.images import read_image, to_rgb_image
from domainvlm.core.model_input import InputAdjustment
from domainvlm.core.precision import autocast_dtype, autocast_encoder
from domainvlm.core.system import BaseSystem
from domainvlm.core.tokenizers import ByteTokenizer
from domainvlm.core.towers.clip import OPENCLIP_PREFIX, build_clip
from domainvlm.core.towers.token_merging import (
    TokenMergingError,
    apply_token_merging,
    vision_transformers,
)
from open_clip.transform import PreprocessCfg, image_transform_v2
from torch import Tensor, nn

HUB_PREFIXES = ("hf-hub:", "local-dir:")


class EncoderSpecError(DomainVLMError, ValueError):
    pass


def resolve_device(device: str) -> str:
    """``auto`` (a GPU when there is one), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise EncoderSpecError(f"--device {device!r} is not a device torch knows ({exc})") from exc
    if kind == "cuda" and not torch.cuda.is_available():
        raise EncoderSpecError(f"--device {device!r}: torch sees no CUDA GPU on this machine")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise EncoderSpecError(f"--device {device!r}: MPS is not available on this machine")
    return device


def load_encoder(
    spec: str,
    device: str = "cpu",
    adjustment: InputAdjustment | None = None,
    token_merging: int | float | None = None,
    precision: str = "fp32",
) -> Encoder:
    return load_encoder_and_system(spec, device, adjustment, token_merging, precision)[0]


def load_encoder_and_system(
    spec: str,
    device: str = "cpu",
    adjustment: InputAdjustment | None = None,
    token_merging: int | float | None = None,
    precision: str = "fp32",
) -> tuple[Encoder, BaseSystem | None]:
    """The encoder on ``device``, plus the trained system when the spec is a checkpoint (it names
    the domain). ``adjustment`` (``--bands``/``--rescale``) goes to encoders that take one;
    ``token_merging`` (tokens per layer, or a ratio) patches its ViT image towers and
    ``precision`` (``fp32``/``bf16``) sets autocast (``speed_up``)."""
    encoder, system = _load(spec, resolve_device(device), adjustment)
    return speed_up(encoder, token_merging, precision), system


def speed_up(encoder: Encoder, token_merging: int | float | None, precision: str) -> Encoder:
    """Token merging in the encoder's ViT image towers, then autocast for ``precision``.

    The weights are untouched, so ``Encoder.identity`` (and a knowledge base's check of it) is
    the same with or without either option."""
    autocast_dtype(precision)  # refuse an unknown precision before patching anything
    if token_merging:
        towers = [m for m in encoder.modules if vision_transformers(m)]
        if not towers:
            raise TokenMergingError(
                f"--token-merging {token_merging}: encoder {encoder.name!r} has no open_clip ViT "
                "image tower to merge tokens in"
            )
        for module in towers:
            apply_token_merging(module, token_merging)
    return autocast_encoder(encoder, precision)


def _load(
    spec: str, device: str, adjustment: InputAdjustment | None
) -> tuple[Encoder, BaseSystem | None]:
    if adjustment is not None and not _takes_adjustment(spec):
        raise EncoderSpecError(
            f"--bands/--rescale ({adjustment.describe()}) apply to checkpoints of domains that "
            f"read multi-band rasters (remote sensing); {spec!r} takes its images as they are"
        )
    if spec.startswith(OPENCLIP_PREFIX):
        model_name, _, pretrained = spec.removeprefix(OPENCLIP_PREFIX).partition(":")
        if not model_name:
            raise EncoderSpecError(
                f"encoder spec {spec!r} names no model: openclip:<model>[:<tag>]"
            )
        return openclip_model_encoder(model_name, pretrained or None, device), None
    if spec.startswith(HUB_PREFIXES):
        return openclip_model_encoder(spec, None, device), None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EncoderSpecError(
            f"encoder {spec!r} is not an existing checkpoint file, nor a spec of the form "
            "openclip:<model>[:<pretrained tag or weights file>], hf-hub:<org/repo> or "
            "local-dir:<folder>"
        )
    system = load_system(path)
    return system_encoder(system, str(path.resolve()), device, adjustment), system


def system_encoder(
    system: BaseSystem, name: str, device: str = "cpu", adjustment: InputAdjustment | None = None
) -> Encoder:
    """The encoder of an in-memory system (moved to ``device``), named ``name``: how a loaded
    checkpoint becomes an encoder, also for systems that exist only in memory (merge sweeps)."""
    system.to(device)
    if adjustment is not None and "adjustment" not in inspect.signature(system.encoder).parameters:
        raise EncoderSpecError(
            f"--bands/--rescale ({adjustment.describe()}): the {type(system).__name__} in "
            f"{name!r} reads its images as they are and takes no band choice or rescaling"
        )
    encoder = system.encoder() if adjustment is None else system.encoder(adjustment=adjustment)
    encoder.name = name
    encoder.device = device
    return encoder


def _takes_adjustment(spec: str) -> bool:
    """open_clip models read RGB images only; a checkpoint's system is asked once it is loaded."""
    return not spec.startswith((OPENCLIP_PREFIX, *HUB_PREFIXES))


def openclip_model_encoder(
    model_name: str, pretrained: str | None = None, device: str = "cpu"
) -> Encoder:
    """An open_clip model (built offline unless a tag or hub id asks for weights) as an Encoder."""
    model, preprocessing = build_clip(model_name, pretrained)
    name = _canonical_name(model_name, pretrained)
    return openclip_encoder(model, _tokenizer_for(model, model_name), name, preprocessing, device)


def openclip_encoder(
    model: nn.Module,
    tokenizer: Callable[[Sequence[str]], Tensor],
    name: str,
    preprocessing: dict | None = None,
    device: str = "cpu",
) -> Encoder:
    """Wrap an in-memory open_clip model; images go through open_clip's own eval transform."""
    model.eval().to(device)
    transform = image_transform_v2(
        PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False
    )

    def load_image(path: str | Path) -> Tensor:
        return transform(to_rgb_image(read_image(path), path))

    return Encoder(
        name=name,
        image_fn=model.encode_image,
        text_fn=lambda texts: model.encode_text(tokenizer(list(texts)).to(device)),
        load_image=load_image,
        modules=[model],
        preprocessing=dict(preprocessing or {}),
        device=device,
    )


def _tokenizer_for(model: nn.Module, model_name: str) -> Callable[[Sequence[str]], Tensor]:
    """open_clip's tokenizer, except for domainvlm's byte-vocabulary configs (``dvlm-*``)."""
    context_length = getattr(model, "context_length", None)
    byte_tokenizer = ByteTokenizer(context_length or 77)
    if getattr(model, "vocab_size", None) == byte_tokenizer.vocab_size:
        return byte_tokenizer
    return open_clip.get_tokenizer(model_name, context_length=context_length)


def _canonical_name(model_name: str, pretrained: str | None) -> str:
    if model_name.startswith("local-dir:"):
        return "local-dir:" + str(Path(model_name.removeprefix("local-dir:")).resolve())
    if model_name.startswith("hf-hub:"):
        return model_name
    if pretrained is not None and Path(pretrained).expanduser().is_file():
        pretrained = str(Path(pretrained).expanduser().resolve())
    return OPENCLIP_PREFIX + model_name + (f":{pretrained}" if pretrained else "")
