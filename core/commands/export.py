"""Write a checkpoint that stands alone: ``--merge`` folds a ``peft`` run's adapters into plain
weights (the result loads, serves and merges like any checkpoint, and keeps its lineage: the base
it was trained from); without ``--merge`` an adapter-only file gets its base weights copied in, the
adapters kept separate, so it no longer needs the base file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "write a stand-alone checkpoint; --merge folds LoRA/peft adapters into the weights"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a domainvlm checkpoint or adapter file")
    parser.add_argument("--out", required=True, help="where to write the new checkpoint")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="fold adapters into the base weights (W + (alpha/r)·B·A): a plain checkpoint",
    )


def run(args: argparse.Namespace) -> int:
    import torch
    from domainvlm.core.adapters import merge_adapters
    from domainvlm.core.checkpoint import load_system, read_checkpoint
    from domainvlm.core.errors import CheckpointError
    from domainvlm.core.files import atomic_save
    from domainvlm.core.system import CHECKPOINT_KEY

    info = dict(read_checkpoint(args.checkpoint)[CHECKPOINT_KEY])
    init_args = dict(info["init_args"])
    if init_args.get("peft") is None:
        raise CheckpointError(
            f"checkpoint {args.checkpoint!r} has no adapters (no peft block): it already stands alone"
        )
    system = load_system(args.checkpoint)
    info["lineage"] = {**info.get("lineage", {}), "exported_from": str(Path(args.checkpoint))}
    info.pop("adapter", None)
    if args.merge:
        merged = merge_adapters(system)
        init_args.pop("peft")
        info["lineage"]["merged_adapters"] = merged
    else:
        init_args["peft"] = {**init_args["peft"], "base": None, "save": "full"}
    info["init_args"] = init_args
    checkpoint = {"state_dict": system.state_dict(), CHECKPOINT_KEY: info}
    atomic_save(args.out, lambda handle: torch.save(checkpoint, handle))
    what = (
        f"{info['lineage']['merged_adapters']} adapters merged" if args.merge else "base copied in"
    )
    print(f"wrote {args.out} ({what}; {Path(args.out).stat().st_size / 2**20:.1f} MiB)")
    return 0
