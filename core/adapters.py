"""Parameter-efficient fine-tuning (the ``peft`` block of any system's config) through ``peft``.

A system whose init arguments hold ``peft: {...}`` gets adapters injected into its modules in
Lightning's ``configure_model`` hook (``BaseSystem.configure_model``), after its towers are built:

- ``base``: a domainvlm checkpoint of the same system whose weights are loaded first (optional: a
  system whose init arguments already load its weights, such as an OpenCLIP tag, needs none).
- ``method``: ``lora`` (default), ``loha``, ``lokr``, ``ia3``, or ``full`` (no adapters: every
  weight trains, but the run still records its base, which ``domainvlm merge`` needs).
- ``target_modules``: regular expressions matched against whole module names (``re.fullmatch``),
  e.g. ``model\\.(visual\\.)?transformer\\.resblocks\\.\\d+\\.attn``. Whole-name patterns are the
  point: open_clip 3.x attention is one ``nn.MultiheadAttention`` per block, which LoRA wraps as a
  whole (one LoRA on the fused q/k/v projection, one on ``out_proj``), and a bare suffix such as
  ``attn`` or ``c_proj`` also matches the other tower, the attention pooler or an EMA teacher.
- ``trainable``: whole-name patterns of parameters that train fully beside the adapters (a task
  head, the logit scale); they are saved in the adapter file.
- ``r``, ``alpha``, ``dropout``, and ``options`` (any other argument of the peft config class).
- ``save``: ``adapter`` (default: checkpoints hold only what trained, a few MB) or ``full``.

An adapter-only checkpoint records its base (path and ``base_sha256``, a hash of the base weights
computed like ``Encoder.identity``); ``load_system`` rebuilds the base, checks the hash and puts the
adapter on top, so ``eval``, ``zeroshot``, ``kb build`` and ``serve`` take adapter files as they take
checkpoints. ``merge_adapters`` folds adapters into plain weights (``domainvlm export --merge``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.ema import EMATeacher
from domainvlm.core.errors import CheckpointError, DomainVLMError
from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig, inject_adapter_in_model
from peft.tuners.lora import layer as lora
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

METHODS = ("lora", "loha", "lokr", "ia3", "full")
SETTINGS = {
    "base",
    "method",
    "target_modules",
    "trainable",
    "r",
    "alpha",
    "dropout",
    "options",
    "save",
}
# Both towers' attention in open_clip models held as ``self.model`` (every domainvlm CLIP system).
DEFAULT_TARGETS = (r"model\.(visual\.)?transformer\.resblocks\.\d+\.attn",)


class AdapterError(DomainVLMError, ValueError):
    """A ``peft`` block that cannot be applied, or an adapter file that does not fit its base."""


class FusedQKVLoRA(lora.MultiheadAttention):
    """peft's LoRA for ``nn.MultiheadAttention`` with the ``out_proj`` delta added once, and base
    weights that never drift.

    peft 0.21 merges ``out_proj`` as ``W + Δ`` and then also calls the wrapped Linear's own merge,
    which adds ``Δ`` again, both when merging and in every forward (it merges around each call):
    the model computed with ``W + 2Δ`` while the gradient saw ``W + Δ``. And it unmerges by
    subtracting, so ``(W + Δ) − Δ`` rounds a little differently after every forward: the weights
    (and ``Encoder.identity``, which a knowledge base checks) changed with each batch embedded.
    This class adds each delta once and unmerges by putting the original parameters back.
    """

    _originals: tuple[nn.Parameter, nn.Parameter] | None = None

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.lora_A:
                continue
            base = self.get_base_layer()
            out = base.out_proj
            out_base = out.get_base_layer()
            if self._originals is None:
                self._originals = (base.in_proj_weight, out_base.weight)
            dtype = out_base.weight.dtype
            in_weight = base.in_proj_weight.data.detach() + self.get_delta_weight(name).to(dtype)
            out_weight = out_base.weight.data.detach() + out.get_delta_weight(name).to(dtype)
            if safe_merge and not (in_weight.isfinite().all() and out_weight.isfinite().all()):
                raise AdapterError(f"adapter {name!r} holds NaN or infinite weights")
            # Plain tensors, not Parameters: the adapter's gradient flows through them in training.
            del base.in_proj_weight
            base.in_proj_weight = in_weight
            del out_base.weight
            out_base.weight = out_weight
            out.merged_adapters.append(name)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if self._originals is None:
            return
        base = self.get_base_layer()
        out_base = base.out_proj.get_base_layer()
        del base.in_proj_weight
        base.register_parameter("in_proj_weight", self._originals[0])
        del out_base.weight
        out_base.register_parameter("weight", self._originals[1])
        self._originals = None
        self.merged_adapters.clear()
        base.out_proj.merged_adapters.clear()


def peft_settings(block: dict[str, Any]) -> dict[str, Any]:
    """The ``peft`` block with defaults filled in, checked; errors name the bad key."""
    if not isinstance(block, dict):
        raise AdapterError(f"peft must be a mapping of settings, got {block!r}")
    unknown = sorted(set(block) - SETTINGS)
    if unknown:
        raise AdapterError(
            f"peft has unknown settings {unknown}; known: {sorted(SETTINGS)} (other arguments of "
            "the peft config class go under peft.options)"
        )
    settings = {
        "base": None,
        "method": "lora",
        "target_modules": list(DEFAULT_TARGETS),
        "trainable": [],
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "options": {},
        "save": "adapter",
        **block,
    }
    if settings["method"] not in METHODS:
        raise AdapterError(f"peft.method {settings['method']!r} is not one of {METHODS}")
    if settings["save"] not in ("adapter", "full"):
        raise AdapterError(f"peft.save must be 'adapter' or 'full', got {settings['save']!r}")
    for key in ("target_modules", "trainable"):
        if isinstance(settings[key], str):
            settings[key] = [settings[key]]
        for pattern in settings[key]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise AdapterError(f"peft.{key} pattern {pattern!r} is not a regex: {exc}") from exc
    if settings["base"] is not None:
        settings["base"] = str(Path(settings["base"]).expanduser().resolve())
    return settings


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of parameter names and values (``Encoder.identity``'s recipe, for a whole state)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(state.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def apply_peft(system: nn.Module) -> None:
    """Load the base, hash it, inject the adapters and freeze the rest (once per system)."""
    if getattr(system, "_peft_base_sha256", None) is not None:
        return
    settings = peft_settings(system.hparams["peft"])
    system.hparams["peft"] = settings
    if settings["base"] is not None:
        _load_base(system, settings["base"])
    system._peft_base_sha256 = state_sha256(system.state_dict())
    if settings["method"] == "full":
        return
    if any(isinstance(module, EMATeacher) for module in system.modules()):
        raise AdapterError(
            f"peft.method {settings['method']!r}: {type(system).__name__} has an EMA teacher "
            "(self-distillation), which adapters would leave out of step with its student; turn "
            "distillation off (distill_weight: 0) or use method: full"
        )
    names = [name for name, _ in system.named_modules()]
    pattern = "|".join(f"(?:{p})" for p in settings["target_modules"])
    if not any(re.fullmatch(pattern, name) for name in names):
        examples = [n for n in names if n.endswith(("attn", "c_fc", "c_proj", "proj"))][:6]
        raise AdapterError(
            f"peft.target_modules {settings['target_modules']} match no module of "
            f"{type(system).__name__} (whole names are matched; some names: {examples})"
        )
    try:
        inject_adapter_in_model(_peft_config(settings, pattern), system)
    except (ValueError, TypeError) as exc:
        raise AdapterError(f"peft {settings['method']} cannot adapt these modules: {exc}") from exc
    for module in system.modules():
        if isinstance(module, nn.TransformerEncoderLayer) and isinstance(
            module.self_attn, BaseTunerLayer
        ):
            # torch's fused inference path reads self_attn's weights directly and would skip the
            # adapter; this flag only gates that path (the activation itself is self.activation).
            module.activation_relu_or_gelu = 0
    keep = "|".join(f"(?:{p})" for p in settings["trainable"]) or None
    for name, param in system.named_parameters():
        if keep and re.fullmatch(keep, name):
            param.requires_grad_(True)


def _peft_config(settings: dict[str, Any], pattern: str) -> Any:
    method, options = settings["method"], dict(settings["options"])
    try:
        if method == "lora":
            config = LoraConfig(
                r=settings["r"],
                lora_alpha=settings["alpha"],
                lora_dropout=settings["dropout"],
                target_modules=pattern,
                **options,
            )
            config._register_custom_module({nn.MultiheadAttention: FusedQKVLoRA})
            return config
        if method == "loha":
            return LoHaConfig(
                r=settings["r"], alpha=settings["alpha"], target_modules=pattern, **options
            )
        if method == "lokr":
            return LoKrConfig(
                r=settings["r"], alpha=settings["alpha"], target_modules=pattern, **options
            )
        return IA3Config(target_modules=pattern, feedforward_modules=[], **options)
    except TypeError as exc:
        raise AdapterError(f"peft.options {options} do not fit peft's {method}: {exc}") from exc


def _load_base(system: nn.Module, base: str) -> None:
    from domainvlm.core.checkpoint import read_checkpoint
    from domainvlm.core.system import CHECKPOINT_KEY

    if not Path(base).is_file():
        raise CheckpointError(f"peft.base {base!r} does not exist")
    checkpoint = read_checkpoint(base)
    info = checkpoint.get(CHECKPOINT_KEY, {})
    cls = type(system)
    if info.get("class_path") != f"{cls.__module__}.{cls.__qualname__}":
        raise CheckpointError(
            f"peft.base {base!r} holds a {info.get('class_path')!r}, not a {cls.__qualname__}"
        )
    if info.get("adapter"):
        raise CheckpointError(
            f"peft.base {base!r} is itself an adapter file; write a plain checkpoint with "
            "`domainvlm export --merge` and use that as the base"
        )
    missing = sorted(set(system.state_dict()) - set(checkpoint.get("state_dict", {})))
    if missing:
        raise CheckpointError(f"peft.base {base!r} lacks weights this system needs: {missing[:5]}")
    try:
        system.load_state_dict(checkpoint["state_dict"], strict=False)
    except RuntimeError as exc:
        raise CheckpointError(
            f"peft.base {base!r} does not fit this system (sizes differ?): "
            f"{str(exc).splitlines()[0]}"
        ) from exc


def lineage(system: nn.Module) -> dict[str, Any]:
    """What the run started from: its base checkpoint and the hash of the base weights."""
    return {
        "base": system.hparams["peft"]["base"],
        "base_sha256": system._peft_base_sha256,
        "method": system.hparams["peft"]["method"],
    }


def on_save(system: nn.Module, checkpoint: dict, info: dict) -> None:
    """Record the lineage; keep only trained tensors when ``save`` is ``adapter``."""
    info["lineage"] = lineage(system)
    settings = system.hparams["peft"]
    if settings["save"] == "full" or settings["method"] == "full":
        return
    trained = {name for name, p in system.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in system.named_buffers()}
    state = checkpoint["state_dict"]
    checkpoint["state_dict"] = {k: v for k, v in state.items() if k in trained or k in buffers}
    info["adapter"] = True


def complete_state(system: nn.Module, info: dict, state: dict, name: str) -> dict:
    """An adapter file's tensors on top of the rebuilt base's, once its hash is checked."""
    if not info.get("adapter"):
        return state
    apply_peft(system)
    recorded = info.get("lineage", {}).get("base_sha256")
    if recorded != system._peft_base_sha256:
        raise CheckpointError(
            f"adapter {name!r} was trained on base weights with sha256 {recorded}, but its base "
            f"{system.hparams['peft']['base']!r} rebuilds to {system._peft_base_sha256}: the "
            "base checkpoint changed or is another one"
        )
    return {**system.state_dict(), **state}


def merge_adapters(module: nn.Module) -> int:
    """Fold every adapter into its base layer and remove the wrappers; returns how many."""
    count = 0
    for child_name, child in list(module.named_children()):
        if isinstance(child, BaseTunerLayer):
            if isinstance(child, lora.MultiheadAttention):
                plain = child.unload_and_optionally_merge_module(True, True, None)
            else:
                child.merge(safe_merge=True)
                plain = child.get_base_layer()
            setattr(module, child_name, plain)
            count += 1
        else:
            count += merge_adapters(child)
    return count


def adapted_modules(module: nn.Module) -> Iterable[tuple[str, BaseTunerLayer]]:
    """Top-level adapter wrappers by name (an MHA's inner ``out_proj`` wrapper is not listed)."""
    for name, child in module.named_modules():
        if isinstance(child, BaseTunerLayer) and not name.endswith(".base_layer.out_proj"):
            yield name, child
