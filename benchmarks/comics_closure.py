"""Comics closure over several seeds: every COMICS and ComicsPAP task against its random baseline,
for the shipped recipe and its ablations.

Each arm is ``configs/comics/tiny.yaml`` plus the arguments below, trained with ``domainvlm fit``
on one sample written by ``domainvlm sample-data comics`` and scored on its held-out books with
``eval closure`` (all ten tasks). Arms: ``compare`` (the shipped recipe: the scorer compares panel
options patch by patch), ``pooled`` (the scorer sees pooled panel embeddings only) and ``no_lettering``
(no re-lettered choices in training: neither swapped nor borrowed texts). Each run's result is
kept in ``OUT/<arm>_seed<seed>/result.json`` and a rerun skips finished runs. Prints one JSON line
per run, then one with mean ± sample std per arm and task.

    python benchmarks/comics_closure.py --out runs/comics/closure_bench --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from seed_runs import DVLM, add_arguments, mean_std, run_seeds, timed

CONFIGS = Path(__file__).parents[1] / "configs" / "comics"
ARMS = {
    "compare": [],
    "pooled": ["--model.init_args.compare_options", "false"],
    "no_lettering": [
        "--model.init_args.swap_weight",
        "0",
        "--model.init_args.borrowed_weight",
        "0",
    ],
}
"""Arm → the arguments after ``--config tiny.yaml``."""


def run(arm: str, seed: int, sample: Path, out: Path, threads: int) -> dict:
    folder = out / f"{arm}_seed{seed}"
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    fit = [
        *DVLM, "fit", "--config", str(CONFIGS / "tiny.yaml"), *ARMS[arm],
        "--seed_everything", str(seed), "--trainer.default_root_dir", str(folder),
        "--trainer.enable_progress_bar", "false", "--data.init_args.root", str(sample),
    ]  # fmt: skip
    os.environ["OMP_NUM_THREADS"] = str(threads)
    wall, cpu = timed(fit, log)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    timed(
        [*DVLM, "eval", "closure", "--checkpoint", str(checkpoint), "--data", str(sample),
         "--out", str(folder / "closure.json")],
        log,
    )  # fmt: skip
    closure = json.loads((folder / "closure.json").read_text())
    result = {
        "arm": arm,
        "seed": seed,
        "fit_wall_s": round(wall, 1),
        "fit_cpu_s": round(cpu, 1),
        "accuracy": {
            f"{row['benchmark']} {row['task']} {row['fold']}": round(100 * row["accuracy"], 1)
            for row in closure["results"]
        },
        "random": {
            f"{row['benchmark']} {row['task']} {row['fold']}": round(100 * row["random"], 1)
            for row in closure["results"]
        },
        "load_average": round(os.getloadavg()[0], 1),
    }
    (folder / "result.json").write_text(json.dumps(result))
    return result


def summarise(rows: list[dict]) -> dict:
    """Per arm and task: [mean, sample std] accuracy over the seeds, and the random baseline."""
    summary = {}
    for arm in ARMS:
        runs = [row for row in rows if row["arm"] == arm]
        if not runs:
            continue
        tasks = runs[0]["accuracy"]
        summary[arm] = {
            task: {
                "accuracy": mean_std([r["accuracy"][task] for r in runs]),
                "random": runs[0]["random"][task],
            }
            for task in tasks
        }
        summary[arm]["fit_cpu_s"] = mean_std([r["fit_cpu_s"] for r in runs])
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, "runs/comics/closure_bench", list(ARMS))
    args = parser.parse_args()
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    run_seeds(
        "comics_closure",
        "comics",
        args,
        lambda arm, seed, sample: run(arm, seed, sample, args.out, threads),
        summarise,
    )


if __name__ == "__main__":
    main()
