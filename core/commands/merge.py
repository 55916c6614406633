"""Merge fine-tunes of one base (adapter files or full checkpoints) into one plain checkpoint.

The checkpoints must record the same base weights in their lineage (runs with a ``peft`` block:
LoRA, or ``method: full`` for full fine-tuning) and be the same system; anything else is refused.
Methods: ``task-arithmetic`` (base + scale·Σ task vectors), ``average``, ``ties`` and ``dare``
(``--density``: the share of each task vector kept).

λ that suits one task can ruin another, so ``--scales 0.2,0.4,...`` with one ``--select-on
DOMAIN=DATA_ROOT`` per held-out set (one per task; several may share a domain) sweeps it: each λ's
merge is built in memory and scored exactly as ``eval zeroshot`` scores a checkpoint (the
domain's zero-shot data, ``--select-split``, English prompts), and the λ with the best mean top-1
accuracy over the sets is written. The sweep (λ → accuracy per set) is printed and recorded in
the checkpoint's lineage.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from domainvlm.core.commands import add_device_argument

if TYPE_CHECKING:
    from torch import nn

HELP = "merge fine-tunes of one base: task arithmetic, average, TIES, DARE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from domainvlm.core.merging import METHODS

    parser.add_argument("checkpoints", nargs="+", help="two or more checkpoints or adapter files")
    parser.add_argument("--out", required=True, help="where to write the merged checkpoint")
    parser.add_argument("--method", choices=METHODS, default="task-arithmetic")
    scale = parser.add_mutually_exclusive_group()
    scale.add_argument("--scale", type=float, default=1.0, help="λ on the summed task vectors")
    scale.add_argument(
        "--scales",
        type=_scales,
        help="comma-separated λ values to sweep (needs --select-on); the best mean accuracy wins",
    )
    parser.add_argument(
        "--select-on",
        action="append",
        default=[],
        metavar="DOMAIN=DATA_ROOT",
        help="held-out zero-shot data of one domain involved, scored for each of --scales "
        "(repeat per domain)",
    )
    parser.add_argument("--select-split", default="val", help="split of --select-on roots")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch in the sweep")
    add_device_argument(parser)
    parser.add_argument("--density", type=float, default=0.2, help="TIES/DARE: share kept")
    parser.add_argument("--seed", type=int, default=0, help="DARE's random drops")


def _scales(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None


def run(args: argparse.Namespace) -> int:
    import torch
    from domainvlm.core.files import atomic_save
    from domainvlm.core.merging import load_for_merge, merge_states, merged_checkpoint

    held_out = _held_out(args)
    lineage, base, states = load_for_merge(args.checkpoints)
    settings = {"method": args.method, "scale": args.scale, "density": args.density}
    settings["seed"] = args.seed
    if held_out:
        state = _swept(args, held_out, base, states, settings)
    else:
        state = merge_states(base, states, **settings)
    checkpoint = merged_checkpoint(args.checkpoints, state, lineage, settings)
    atomic_save(args.out, lambda handle: torch.save(checkpoint, handle))
    print(
        f"wrote {args.out}: {args.method} of {len(states)} models on base {lineage.get('base')} "
        f"(scale {settings['scale']:g}, {Path(args.out).stat().st_size / 2**20:.1f} MiB)"
    )
    return 0


def _held_out(args: argparse.Namespace) -> dict[str, tuple[str, Path]]:
    """``--select-on`` as {label: (domain, data root)}, checked against ``--scales`` and
    ``--method``. The label is the domain, or ``DOMAIN=DATA_ROOT`` where a domain has several
    held-out sets (two tasks of one domain are the usual merge)."""
    from domainvlm.core.merging import MergeError

    if bool(args.scales) != bool(args.select_on):
        raise MergeError(
            "--scales and --select-on go together: the sweep scores each scale on held-out data "
            "of every domain involved"
        )
    if args.scales and args.method == "average":
        raise MergeError("--method average has no scale to sweep; drop --scales/--select-on")
    if len(set(args.select_on)) != len(args.select_on):
        raise MergeError(f"--select-on repeats a held-out set: {args.select_on}")
    pairs = []
    for option in args.select_on:
        domain, sep, root = option.partition("=")
        if not sep or not domain or not root:
            raise MergeError(f"--select-on {option!r} is not DOMAIN=DATA_ROOT")
        if not Path(root).exists():
            raise MergeError(f"--select-on {option!r}: data root {root!r} does not exist")
        pairs.append((option, domain, Path(root)))
    domains = [domain for _, domain, _ in pairs]
    return {
        domain if domains.count(domain) == 1 else option: (domain, root)
        for option, domain, root in pairs
    }


def _swept(
    args: argparse.Namespace,
    held_out: dict[str, tuple[str, Path]],
    base: dict,
    states: list,
    settings: dict,
) -> dict:
    """Sweep ``--scales``, print the table, record the sweep in ``settings``; the best weights."""
    from domainvlm.core.adapters import merge_adapters
    from domainvlm.core.checkpoint import load_system
    from domainvlm.core.commands.evaluate import evaluate_zeroshot
    from domainvlm.core.encoder_loader import resolve_device, system_encoder
    from domainvlm.core.merging import sweep_scale
    from domainvlm.core.registry import get_domain

    device = resolve_device(args.device)
    plugins = {domain: get_domain(domain) for domain, _ in held_out.values()}
    system = load_system(args.checkpoints[0])
    merge_adapters(system)
    system.eval()

    def score(merged: nn.Module) -> dict[str, float]:
        encoder = system_encoder(merged, f"merge of {len(states)} (in memory)", device)
        options = dict(split=args.select_split, lang="en", templates=None, class_folders=False)
        options |= dict(batch_size=args.batch_size, confusion_matrix=None)
        return {
            label: evaluate_zeroshot(
                argparse.Namespace(data=root, **options), encoder, plugins[domain]
            )["acc1"]
            for label, (domain, root) in held_out.items()
        }

    kept = {k: settings[k] for k in ("method", "density", "seed")}
    best, sweep, state = sweep_scale(system, base, states, args.scales, score, **kept)
    print(_table(sweep, best))
    settings["scale"] = best
    settings["scale_sweep"] = {
        "metric": "acc1",
        "split": args.select_split,
        "select_on": {
            label: {"domain": domain, "root": str(root.resolve())}
            for label, (domain, root) in held_out.items()
        },
        "accuracies": [{"scale": scale, **accs} for scale, accs in sweep.items()],
    }
    return state


def _table(sweep: dict[float, dict[str, float]], best: float) -> str:
    labels = [*next(iter(sweep.values())), "mean"]
    widths = [max(8, len(label) + 2) for label in labels]
    lines = ["scale  " + "".join(f"{x:>{w}}" for x, w in zip(labels, widths, strict=True))]
    for scale, accs in sweep.items():
        values = [*accs.values(), sum(accs.values()) / len(accs)]
        row = "".join(f"{v:>{w}.4f}" for v, w in zip(values, widths, strict=True))
        lines.append(f"{scale:<5g}  " + row + ("  <- chosen" if scale == best else ""))
    return "\n".join(lines)
