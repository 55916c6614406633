"""Merging two fine-tunes of one base, per domain: each merged model's accuracy as a share of each
specialist's and of the base's, over several seeds.

Per domain and seed (``benchmarks/fewshot_domains.py``): a base is pretrained; two specialists are
LoRA fine-tunes of it, one per task - remote sensing: "built" (Highway, Industrial, Residential)
and "water" (River, SeaLake, PermanentCrop), six classes the base never saw; medical: organ
(chest / brain / abdomen) and modality (CT / radiograph) of held-out-split images. Every merge
method (task arithmetic, TIES, DARE, average; through ``domainvlm.core.merging``, adapter files
folded in first, lineage checked) is swept over λ, λ picked on a validation half of both tasks
(mean accuracy; ``sweep_scale``, as ``domainvlm merge --scales`` does), then tested on the other
half. Prints one JSON line per domain, method and seed (per task: merged, specialist and base
acc1, the merged model's share of the specialist's and of the base's accuracy), then per domain
and method the mean and sample std over seeds, and per domain CPU and wall seconds and the load.

    python benchmarks/merge.py [--domains remote_sensing,medical] [--seeds 0,1,2] [--steps 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from adapt import accuracy, finetune
from domainvlm.core.checkpoint import load_system
from domainvlm.core.merging import load_for_merge, sweep_scale
from fewshot_domains import add_common_arguments, run_domains, save, split

SWEEP = {
    "task-arithmetic": [0.3, 0.5, 0.7, 1.0],
    "ties": [0.5, 0.7, 1.0, 1.5],
    "dare": [0.3, 0.5, 0.7, 1.0],
    "average": [1.0],
}
DENSITY = 0.5


def run_seed(domain, args, seed: int, work: Path) -> dict[str, dict]:
    """Specialists, their base and every merge method on one seed."""
    tasks = {name: domain.task(name, classes) for name, classes in domain.merge_tasks.items()}
    excluded = {c for task in tasks.values() for c in task.classes}
    base = domain.pretrain(excluded, args.pretrain_steps[domain.name], seed, work / "b")
    rng = np.random.default_rng(seed)
    data, specialists = {}, {}
    lora_lr = args.lora_lr or domain.lora_lr
    for name, task in tasks.items():
        data[name] = split(domain, task, args.shots, rng, halves=True)
        system = domain.new_system({"base": str(base), **domain.lora}, seed)
        finetune(domain, system, task, *data[name]["train"], args.steps, lora_lr)
        specialists[name] = work / f"{name}.ckpt"
        save(system, specialists[name])

    def score(system, part: str) -> dict[str, float]:
        return {
            name: accuracy(domain, system, task, *data[name][part]) for name, task in tasks.items()
        }

    base_acc = score(load_system(base), "test")
    own = {name: score(load_system(path), "test")[name] for name, path in specialists.items()}
    lineage, base_state, states = load_for_merge([str(specialists[name]) for name in tasks])
    merged_system = domain.new_system(seed=seed)
    rows = {}
    for method, scales in SWEEP.items():
        best, _, _ = sweep_scale(
            merged_system,
            base_state,
            states,
            scales,
            lambda system: score(system, "val"),
            method,
            density=DENSITY,
            seed=seed,
        )
        test = score(merged_system, "test")
        rows[method] = {"scale": best, "density": DENSITY, "lora_lr": lora_lr}
        for name in tasks:
            rows[method][name] = {
                "merged_acc1": test[name],
                "specialist_acc1": own[name],
                "base_acc1": base_acc[name],
                "share_of_specialist": test[name] / own[name],
                "share_of_base": test[name] / base_acc[name],
                "test_images": len(data[name]["test"][1]),
            }
    return rows


def summarise(name: str, runs: list[dict[str, dict]]) -> list[dict]:
    lines = []
    for method, row in runs[0].items():
        line = {"domain": name, "method": method, "seeds": len(runs)}
        line["scales"] = [run[method]["scale"] for run in runs]
        for task in row:
            if not isinstance(row[task], dict):
                continue
            for key in ("merged_acc1", "specialist_acc1", "base_acc1", "share_of_specialist"):
                values = np.array([run[method][task][key] for run in runs])
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                line[f"{task}_{key}"] = [float(values.mean()), std]
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--lora-lr", type=float, help="the specialists' lr (default: the domain's)")
    return run_domains(parser.parse_args(argv), run_seed, summarise)


if __name__ == "__main__":
    sys.exit(main())
