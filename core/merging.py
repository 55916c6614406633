"""Merge fine-tunes of one base into one model: task arithmetic, averaging, TIES and DARE.

Each model's task vector is ``τ_i = θ_i − θ_base``. Task arithmetic adds ``λ·Σ τ_i`` to the base
(Ilharco et al. 2023); averaging is ``θ_base + mean τ_i``; TIES (Yadav et al. 2023) keeps the
largest ``density`` share of each τ_i by magnitude, elects a sign per weight from the sum of what
is left, and averages only the entries that agree with it; DARE (Yu et al. 2024) drops each entry
of τ_i with probability ``1 − density`` and rescales the rest by ``1/density`` before adding.

Merging is only meaningful for models that share a base, so it is checked, not assumed: every
checkpoint must record the same base weights (``lineage.base_sha256``, written by runs with a
``peft`` block, adapter or ``method: full``), be the same system class with the same weight names
and shapes, and the base file must still hash to the recorded value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from domainvlm.core.adapters import merge_adapters, state_sha256
from domainvlm.core.checkpoint import load_system, read_checkpoint
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.system import CHECKPOINT_KEY
from torch import Tensor

METHODS = ("task-arithmetic", "average", "ties", "dare")


class MergeError(DomainVLMError, ValueError):
    """Models that do not share a base or an architecture, or bad merge settings."""


def load_for_merge(paths: Sequence[str | Path]) -> tuple[dict, dict[str, Tensor], list[dict]]:
    """The checked lineage, the base weights and each model's plain weights (adapters folded)."""
    if len(paths) < 2:
        raise MergeError("merge needs at least two checkpoints")
    infos = [read_checkpoint(path).get(CHECKPOINT_KEY, {}) for path in paths]
    first = infos[0]
    for path, info in zip(paths, infos, strict=True):
        lineage = info.get("lineage") or {}
        if not lineage.get("base_sha256"):
            raise MergeError(
                f"checkpoint {str(path)!r} records no base in its lineage: only runs with a peft "
                "block (LoRA, or method: full for full fine-tuning) know which base they share"
            )
        if info.get("class_path") != first.get("class_path"):
            raise MergeError(
                f"checkpoint {str(path)!r} is a {info.get('class_path')}, {str(paths[0])!r} a "
                f"{first.get('class_path')}: different architectures cannot be merged"
            )
        if lineage["base_sha256"] != first["lineage"]["base_sha256"]:
            raise MergeError(
                f"checkpoint {str(path)!r} was fine-tuned from base {lineage.get('base')!r} "
                f"(sha256 {lineage['base_sha256'][:12]}...), {str(paths[0])!r} from "
                f"{first['lineage'].get('base')!r} ({first['lineage']['base_sha256'][:12]}...): "
                "only fine-tunes of the same base weights can be merged"
            )
    states = []
    for path in paths:
        system = load_system(path)
        merge_adapters(system)
        states.append(system.state_dict())
    for path, state in zip(paths[1:], states[1:], strict=True):
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if shapes != {k: tuple(v.shape) for k, v in states[0].items()}:
            raise MergeError(
                f"checkpoint {str(path)!r} has other weight names or shapes than "
                f"{str(paths[0])!r}: different architectures cannot be merged"
            )
    return first["lineage"], _base_state(first["lineage"], states[0]), states


def _base_state(lineage: dict, like: dict[str, Tensor]) -> dict[str, Tensor]:
    base = lineage.get("base")
    if not base or not Path(base).is_file():
        raise MergeError(f"the models' base checkpoint {base!r} does not exist; merging needs it")
    stored = read_checkpoint(base).get("state_dict", {})
    missing = sorted(set(like) - set(stored))
    if missing:
        raise MergeError(f"base checkpoint {base!r} lacks weights of the models: {missing[:5]}")
    state = {key: stored[key] for key in like}
    if state_sha256(state) != lineage["base_sha256"]:
        raise MergeError(
            f"base checkpoint {base!r} no longer holds the weights the models were trained from "
            f"(sha256 differs from {lineage['base_sha256'][:12]}...)"
        )
    return state


def merge_states(
    base: dict[str, Tensor],
    states: Sequence[dict[str, Tensor]],
    method: str = "task-arithmetic",
    scale: float = 1.0,
    density: float = 0.2,
    seed: int = 0,
) -> dict[str, Tensor]:
    """The merged weights; tensors that are not floating point (counters, ids) come from the base."""
    if method not in METHODS:
        raise MergeError(f"merge method {method!r} is not one of {METHODS}")
    if not 0 < density <= 1:
        raise MergeError(f"density must be in (0, 1], got {density}")
    generator = torch.Generator().manual_seed(seed)
    merged = {}
    for key, weight in base.items():
        if not weight.is_floating_point():
            merged[key] = weight.clone()
            continue
        vectors = torch.stack([state[key].float() - weight.float() for state in states])
        merged[key] = (weight.float() + _combine(vectors, method, scale, density, generator)).to(
            weight.dtype
        )
    return merged


def _combine(
    vectors: Tensor, method: str, scale: float, density: float, generator: torch.Generator
) -> Tensor:
    if method == "average":
        return vectors.mean(0)
    if method == "task-arithmetic":
        return scale * vectors.sum(0)
    if method == "dare":
        keep = torch.rand(vectors.shape, generator=generator) < density
        return scale * (vectors * keep / density).sum(0)
    # TIES: trim, elect sign, disjoint mean.
    flat = vectors.reshape(len(vectors), -1)
    k = max(1, int(round(density * flat.shape[1])))
    threshold = flat.abs().kthvalue(flat.shape[1] - k + 1, dim=1, keepdim=True).values
    trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
    sign = torch.sign(trimmed.sum(0))
    agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
    total = (trimmed * agree).sum(0)
    count = agree.sum(0).clamp(min=1)
    return scale * (total / count).reshape(vectors.shape[1:])


def sweep_scale(
    system: torch.nn.Module,
    base: dict[str, Tensor],
    states: Sequence[dict[str, Tensor]],
    scales: Sequence[float],
    score: Callable[[torch.nn.Module], dict[str, float]],
    method: str = "task-arithmetic",
    density: float = 0.2,
    seed: int = 0,
) -> tuple[float, dict[float, dict[str, float]], dict[str, Tensor]]:
    """λ with the best mean held-out score, every λ's scores, and the weights merged with it.

    Each λ's merge is loaded into ``system`` (left holding the best one) and scored by ``score``
    (one accuracy per held-out set): λ that suits one task can ruin another, so it is chosen on
    all of them together. The first λ wins ties."""
    if not scales:
        raise MergeError("the scale sweep needs at least one scale")
    if len(set(scales)) != len(scales):
        raise MergeError(f"scales {list(scales)} repeat a value")
    sweep, best = {}, None
    for scale in scales:
        state = merge_states(base, states, method, scale=scale, density=density, seed=seed)
        system.load_state_dict(state)
        sweep[scale] = score(system)
        mean = sum(sweep[scale].values()) / len(sweep[scale])
        if best is None or mean > best[0]:
            best = (mean, scale, state)
    system.load_state_dict(best[2])
    return best[1], sweep, best[2]


def merged_checkpoint(
    paths: Sequence[str | Path], state: dict[str, Tensor], lineage: dict, settings: dict[str, Any]
) -> dict:
    """A plain checkpoint (no peft block) that records what it was merged from and how."""
    info = dict(read_checkpoint(paths[0])[CHECKPOINT_KEY])
    info.pop("adapter", None)
    info["init_args"] = {k: v for k, v in info["init_args"].items() if k != "peft"}
    info["lineage"] = {
        "base": lineage.get("base"),
        "base_sha256": lineage["base_sha256"],
        "merged_from": [str(Path(p).resolve()) for p in paths],
        **settings,
    }
    return {"state_dict": state, CHECKPOINT_KEY: info}
