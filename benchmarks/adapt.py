"""Few-shot adaptation to a held-out task: LoRA, full fine-tuning, a linear probe on frozen
features, and zero-shot, in remote sensing and medical imaging, over several seeds.

Per domain and seed (``benchmarks/fewshot_domains.py`` has the data, bases and scoring): a base is
pretrained (the seed sets its initialisation, batches and the shots); each method gets ``--shots``
examples per class of the held-out task - remote sensing: four scene classes the base never saw;
medical: organ (chest / brain / abdomen) of held-out-split images - and is tested on the remaining
ones. LoRA and full fine-tuning train the same FLYP-style objective (each shot against every class
prompt, cross-entropy over the classes: cosine logits for RSMCLIP, ITM log-odds for M3AE) for the
same steps, then classify zero-shot; the probe is a logistic regression on frozen image embeddings.

Prints one JSON line per domain, method and seed (acc1, trainable parameters - those the
objective updated -, median step time, checkpoint size: LoRA the adapter file, full the whole
checkpoint, probe the linear layer), then per domain and method the mean and sample std over seeds,
and per domain the issue's goal check (LoRA within 1 point of full fine-tuning at <= 2 % of its
trainable parameters), CPU seconds, wall seconds and the load average.

    python benchmarks/adapt.py [--domains remote_sensing,medical] [--seeds 0,1,2] [--shots 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fewshot_domains import Task, add_common_arguments, run_domains, save, split


@torch.no_grad()
def accuracy(domain, system, task: Task, images: torch.Tensor, targets: torch.Tensor) -> float:
    system.eval()
    return float((domain.logits(system, images, task).argmax(1) == targets).float().mean())


def finetune(domain, system, task: Task, images, targets, steps: int, lr: float) -> float:
    """FLYP-style: every shot against all class prompts; returns the median step time in ms."""
    params = [p for p in system.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    system.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = F.cross_entropy(domain.logits(system, images, task), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def trained_params(system) -> int:
    """Parameters the objective updated (frozen ones and heads it never reaches have no grad)."""
    return sum(p.numel() for p in system.parameters() if p.grad is not None)


def linear_probe(domain, system, train, test, classes: int, out: Path) -> dict:
    with torch.no_grad():
        system.eval()
        features = domain.features(system, torch.cat([train[0], test[0]]))
    train_f, test_f = features[: len(train[0])], features[len(train[0]) :]
    head = torch.nn.Linear(train_f.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    times = []
    for _ in range(300):
        start = time.perf_counter()
        loss = F.cross_entropy(head(train_f * 10), train[1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    torch.save(head.state_dict(), out)
    return {
        "acc1": float((head(test_f * 10).argmax(1) == test[1]).float().mean()),
        "trainable_params": sum(p.numel() for p in head.parameters()),
        "step_ms": 1000 * float(np.median(times)),
        "checkpoint_bytes": out.stat().st_size,
    }


def run_seed(domain, args, seed: int, work: Path) -> dict[str, dict]:
    """Every method on one seed's base and shots."""
    task = domain.task("adapt", domain.adapt_task)
    base = domain.pretrain(set(task.classes), args.pretrain_steps[domain.name], seed, work / "b")
    data = split(domain, task, args.shots, np.random.default_rng(seed))
    zero = domain.new_system({"base": str(base), "method": "full"}, seed)
    rows = {
        "zero-shot": {
            "acc1": accuracy(domain, zero, task, *data["test"]),
            "trainable_params": 0,
            "step_ms": 0.0,
            "checkpoint_bytes": 0,
        },
        "linear probe": linear_probe(
            domain, zero, data["train"], data["test"], len(task.classes), work / "probe.pt"
        ),
    }
    for method, peft, lr in (
        ("lora", {"base": str(base), **domain.lora}, domain.lora_lr),
        ("full fine-tuning", {"base": str(base), "method": "full"}, domain.full_lr),
    ):
        system = domain.new_system(peft, seed)
        step_ms = finetune(domain, system, task, *data["train"], args.steps, lr)
        rows[method] = {
            "acc1": accuracy(domain, system, task, *data["test"]),
            "trainable_params": trained_params(system),
            "step_ms": step_ms,
            "checkpoint_bytes": save(system, work / f"{method}.ckpt"),
            "lr": lr,
        }
    common = {"classes": list(task.classes), "shots": args.shots, "steps": args.steps}
    common["test_images"] = len(data["test"][1])
    return {method: {**common, **row} for method, row in rows.items()}


def summarise(name: str, runs: list[dict[str, dict]]) -> list[dict]:
    """Mean and sample std over seeds per method, and the goal check."""
    lines = []
    for method in runs[0]:
        acc = np.array([run[method]["acc1"] for run in runs])
        step = np.array([run[method]["step_ms"] for run in runs])
        lines.append(
            {
                "domain": name,
                "method": method,
                "seeds": len(runs),
                "acc1_mean": float(acc.mean()),
                "acc1_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "acc1_per_seed": acc.tolist(),
                "trainable_params": runs[0][method]["trainable_params"],
                "step_ms_mean": float(step.mean()),
                "checkpoint_bytes": runs[0][method]["checkpoint_bytes"],
            }
        )
    by_method = {line["method"]: line for line in lines}
    lora, full = by_method["lora"], by_method["full fine-tuning"]
    gap = 100 * (full["acc1_mean"] - lora["acc1_mean"])
    share = lora["trainable_params"] / full["trainable_params"]
    lines.append(
        {
            "domain": name,
            "goal": "LoRA within 1 point of full fine-tuning at <= 2 % of its trainable parameters",
            "points_behind_full": gap,
            "param_share": share,
            "met": bool(gap <= 1.0 and share <= 0.02),
        }
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    return run_domains(parser.parse_args(argv), run_seed, summarise)


if __name__ == "__main__":
    sys.exit(main())
