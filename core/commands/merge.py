"""Merge fine-tunes of one base (adapter files or full checkpoints) into one plain checkpoint.

The checkpoints must record the same base weights in their lineage (runs with a ``peft`` block:
LoRA, or ``method: full`` for full fine-tuning) and be the same system; anything else is refused.
Methods: ``task-arithmetic`` (base + scale·Σ task vectors), ``average``, ``ties`` and ``dare``
(``--density``: the share of each task vector kept). Pick ``--scale`` on held-out data of every
domain involved (``benchmarks/merge.py`` sweeps it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "merge fine-tunes of one base: task arithmetic, average, TIES, DARE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from domainvlm.core.merging import METHODS

    parser.add_argument("checkpoints", nargs="+", help="two or more checkpoints or adapter files")
    parser.add_argument("--out", required=True, help="where to write the merged checkpoint")
    parser.add_argument("--method", choices=METHODS, default="task-arithmetic")
    parser.add_argument("--scale", type=float, default=1.0, help="λ on the summed task vectors")
    parser.add_argument("--density", type=float, default=0.2, help="TIES/DARE: share kept")
    parser.add_argument("--seed", type=int, default=0, help="DARE's random drops")


def run(args: argparse.Namespace) -> int:
    import torch
    from domainvlm.core.files import atomic_save
    from domainvlm.core.merging import load_for_merge, merge_states, merged_checkpoint

    lineage, base, states = load_for_merge(args.checkpoints)
    settings = {"method": args.method, "scale": args.scale, "density": args.density}
    settings["seed"] = args.seed
    state = merge_states(base, states, **settings)
    checkpoint = merged_checkpoint(args.checkpoints, state, lineage, settings)
    atomic_save(args.out, lambda handle: torch.save(checkpoint, handle))
    print(
        f"wrote {args.out}: {args.method} of {len(states)} models on base {lineage.get('base')} "
        f"({Path(args.out).stat().st_size / 2**20:.1f} MiB)"
    )
    return 0
