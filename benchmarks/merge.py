"""Merging two fine-tunes of one base: each merged model's accuracy as a share of each specialist's.

A base RSMCLIP is pretrained (as in ``benchmarks/adapt.py``) on the captions of four scene classes
of the demo sample; two specialists are LoRA fine-tunes of it, one per held-out task (three unseen
classes each). Every merge method (task arithmetic, TIES, DARE, average; through
``domainvlm.core.merging``, adapter files folded in first) is swept over λ, λ picked on a
validation split of both tasks (mean accuracy; ``sweep_scale``, as ``domainvlm merge --scales``
does), then tested on each task's test split. Prints one JSON line per method: per task the
merged acc1, the specialist's and the base's, and the ratio.

    python benchmarks/merge.py [--sample DIR] [--steps 40] [--pretrain-steps 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from adapt import accuracy, finetune, load_chips, new_system, pretrain, save
from domainvlm.core.checkpoint import load_system
from domainvlm.core.merging import load_for_merge, sweep_scale
from domainvlm.domains.remote_sensing.knowledge import class_names
from domainvlm.domains.remote_sensing.sample import write_sample

TASKS = {
    "built": ("Highway", "Industrial", "Residential"),
    "water": ("River", "SeaLake", "PermanentCrop"),
}
SWEEP = {
    "task-arithmetic": [0.3, 0.5, 0.7, 1.0],
    "ties": [0.5, 0.7, 1.0, 1.5],
    "dare": [0.3, 0.5, 0.7, 1.0],
    "average": [1.0],
}


def split(labels, classes, shots, rng):
    """Per class: ``shots`` to train, then half of the rest to validate and half to test."""
    parts = {"train": [], "val": [], "test": []}
    for k, cls in enumerate(classes):
        members = rng.permutation([i for i, label in enumerate(labels) if label == cls])
        rest = members[shots:]
        parts["train"] += [(i, k) for i in members[:shots]]
        parts["val"] += [(i, k) for i in rest[: len(rest) // 2]]
        parts["test"] += [(i, k) for i in rest[len(rest) // 2 :]]
    return parts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--sample", type=Path, help="the demo sample (written here if missing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = class_names("EuroSAT")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample = args.sample or root / "sample"
        if not (sample / "dataset_rsmclip.json").is_file():
            write_sample(sample, "demo")
        images, labels, captions = load_chips(sample)
        held_out = {c for classes in TASKS.values() for c in classes}
        seen = [i for i, label in enumerate(labels) if label not in held_out]
        base = pretrain(images[seen], [captions[i] for i in seen], args.pretrain_steps, root / "b")
        rng = np.random.default_rng(0)
        data, specialists = {}, {}
        for task, classes in TASKS.items():
            parts = split(labels, classes, args.shots, rng)
            data[task] = {
                part: (images[[i for i, _ in rows]], torch.tensor([k for _, k in rows]))
                for part, rows in parts.items()
            }
            data[task]["prompts"] = [f"a satellite image of {names[c]}." for c in classes]
            system = new_system({"base": str(base), "r": 4, "alpha": 8})
            x, y = data[task]["train"]
            finetune(system, x, y, data[task]["prompts"], args.steps, 1e-3)
            specialists[task] = root / f"{task}.ckpt"
            save(system, specialists[task])

        def score(system, part):
            return {t: accuracy(system, *data[t][part], data[t]["prompts"]) for t in TASKS}

        base_acc = score(load_system(base), "test")
        own = {t: score(load_system(specialists[t]), "test")[t] for t in TASKS}
        lineage, base_state, states = load_for_merge([str(specialists[t]) for t in TASKS])
        merged_system = new_system()
        for method, scales in SWEEP.items():
            best, _, _ = sweep_scale(
                merged_system,
                base_state,
                states,
                scales,
                lambda system: score(system, "val"),
                method,
                density=0.5,
            )
            test = score(merged_system, "test")
            row = {"method": method, "scale": best, "density": 0.5}
            for t in TASKS:
                row[t] = {
                    "merged_acc1": test[t],
                    "specialist_acc1": own[t],
                    "base_acc1": base_acc[t],
                    "share_of_specialist": test[t] / own[t],
                }
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
