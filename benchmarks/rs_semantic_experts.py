"""Semantic experts with retrieval on vs off, over several seeds.

One seed's difference can be noise (720 test questions: one standard error is ~1.3 points), so
``--task vqa`` / ``scene`` fits and tests both arms of a config pair for each seed (``domainvlm
fit`` then ``domainvlm test``, exactly as a user would) and prints one JSON line: per-seed test
metrics, and their mean and standard deviation per arm. Run after ``domainvlm fit --config
configs/remote_sensing/tiny.yaml`` (the experts read its checkpoint). VQA, 3 seeds: ~25 min on 2
CPU cores.

``--task unseen`` is the open-vocabulary study (``rs_unseen_arms.py``): seed ``i`` uses tower
``--towers[i]`` (an RS-M-CLIP checkpoint; train one per seed), redraws the unseen chips and seeds
the experts' fits; each arm's numbers are then summarised as mean ± standard deviation over seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from rs_unseen_arms import run_tower

CONFIGS = Path(__file__).parents[1] / "configs" / "remote_sensing"
PAIRS = {
    "vqa": ("semantic_experts_vqa.yaml", "no_retrieval_vqa.yaml"),
    "scene": ("semantic_experts.yaml", "no_retrieval.yaml"),
}


def run_arm(task: str, retrieval: bool, seed: int, work: Path, overrides: list[str]) -> dict:
    """Fit and test one arm in ``work`` (runs/ is left alone); returns its test metrics."""
    experts, ablation = PAIRS[task]
    arm = f"{'on' if retrieval else 'off'}_seed{seed}"
    redirect = work / f"{arm}.yaml"  # later configs replace the callback and logger lists
    redirect.write_text(
        json.dumps(
            {
                "trainer": {
                    "default_root_dir": str(work / arm),
                    "logger": {
                        "class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(work), "name": arm},
                    },
                    "callbacks": [
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {
                                "dirpath": str(work / arm),
                                "save_last": True,
                                "save_top_k": 0,
                                "enable_version_counter": False,
                            },
                        }
                    ],
                }
            }
        )
    )
    configs = ["--config", str(CONFIGS / experts)]
    if not retrieval:
        configs += ["--config", str(CONFIGS / ablation)]
    configs += ["--config", str(redirect)]
    cli = [sys.executable, "-m", "domainvlm.core.cli"]
    fit = [*configs, f"--seed_everything={seed}", "--trainer.logger.init_args.version=fit"]
    subprocess.run([*cli, "fit", *fit, *overrides], check=True)
    test = [
        *configs,
        "--trainer.logger.init_args.version=test",
        f"--ckpt_path={work / arm}/last.ckpt",
    ]
    subprocess.run([*cli, "test", *test], check=True)
    with open(work / arm / "test" / "metrics.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    return {
        key.removeprefix("test/"): round(100 * float(value), 2)
        for key, value in row.items()
        if key.startswith("test/acc")
    }


def summarise(runs: list[dict]) -> dict:
    keys = runs[0].keys()
    return {
        key: {
            "mean": round(statistics.mean(run[key] for run in runs), 2),
            "std": round(statistics.stdev(run[key] for run in runs), 2) if len(runs) > 1 else 0.0,
        }
        for key in keys
    }


def summarise_nested(runs: list[dict]) -> dict | str:
    """Every numeric leaf of the per-seed results as "mean ± std" over seeds."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: summarise_nested([run[key] for run in runs]) for key in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        std = statistics.stdev(runs) if len(runs) > 1 else 0.0
        return f"{statistics.mean(runs):.2f} ± {std:.2f}"
    return " / ".join(str(run) for run in runs)


def run_unseen(args: argparse.Namespace, work: Path) -> None:
    if args.merge:  # seeds run as separate processes: one summary over all their runs
        runs = [run for path in args.merge for run in json.loads(path.read_text())["runs"]]
        args.seeds = [run["seed"] for run in runs]
    elif len(args.towers) != len(args.seeds):
        raise SystemExit(
            f"--towers gives {len(args.towers)} checkpoints for {len(args.seeds)} seeds"
        )
    else:
        torch.set_num_threads(1)
        runs = [
            run_tower(tower, seed, Path(args.data), work, args.config, args.chips_per_class)
            for tower, seed in zip(args.towers, args.seeds)
        ]
    summary = summarise_nested(
        [{k: run[k] for k in ("tower_zero_shot_unseen", "experts")} for run in runs]
    )
    print(
        json.dumps(
            {
                "benchmark": "rs_semantic_experts",
                "task": "unseen",
                "seeds": args.seeds,
                "config": str(args.config),
                "summary": summary,
                "runs": runs,
            },
            ensure_ascii=False,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*sorted(PAIRS), "unseen"], default="vqa")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, help="logs and checkpoints (default: a temp dir)")
    parser.add_argument("--towers", nargs="+", default=[], help="unseen: a checkpoint per seed")
    parser.add_argument("--data", default="data/samples/remote_sensing", help="unseen: the sample")
    parser.add_argument("--config", type=Path, default=CONFIGS / "semantic_experts_open.yaml")
    parser.add_argument("--chips-per-class", type=int, default=20, help="unseen: per split")
    parser.add_argument("--merge", type=Path, nargs="+", help="unseen: summarise earlier outputs")
    args, overrides = parser.parse_known_args()  # the rest goes to fit: --trainer.max_epochs=2
    work = args.work or Path(tempfile.mkdtemp(prefix="rs_semantic_experts_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.task == "unseen":
        run_unseen(args, work)
        return
    results = {"on": [], "off": []}
    for seed in args.seeds:
        for arm in ("on", "off"):
            results[arm].append(run_arm(args.task, arm == "on", seed, work, overrides))
    print(
        json.dumps(
            {
                "benchmark": "rs_semantic_experts",
                "task": args.task,
                "seeds": args.seeds,
                "retrieval_on": summarise(results["on"]),
                "retrieval_off": summarise(results["off"]),
                "runs": results,
            }
        )
    )


if __name__ == "__main__":
    main()
