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
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from surgical_ablation import DVLM, timed

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
                "accuracy": [
                    round(statistics.mean(r["accuracy"][task] for r in runs), 1),
                    round(statistics.stdev(r["accuracy"][task] for r in runs), 1)
                    if len(runs) > 1
                    else 0.0,
                ],
                "random": runs[0]["random"][task],
            }
            for task in tasks
        }
        summary[arm]["fit_cpu_s"] = round(statistics.mean(r["fit_cpu_s"] for r in runs), 1)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/comics/closure_bench"))
    parser.add_argument("--size", default="demo", help="sample size (small, demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["compare"], choices=list(ARMS))
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument(
        "--collect", action="store_true", help="only summarise the finished runs under --out"
    )
    args = parser.parse_args()
    if args.collect:
        rows = [json.loads(path.read_text()) for path in sorted(args.out.glob("*/result.json"))]
        print(
            json.dumps({"bench": "comics_closure", "runs": len(rows), "summary": summarise(rows)})
        )
        return

    args.out.mkdir(parents=True, exist_ok=True)
    sample = args.out / "sample"
    if not (sample / "README.txt").is_file():
        command = [*DVLM, "sample-data", "comics", "--out", str(sample), "--size", args.size]
        timed(command, args.out / "sample_log.txt")
    load_before = os.getloadavg()
    begin = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run(*job, sample, args.out, threads), jobs))
    for row in rows:
        print(json.dumps({"bench": "comics_closure", **row}))
    print(
        json.dumps(
            {
                "bench": "comics_closure",
                "summary": summarise(rows),
                "size": args.size,
                "wall_s": round(time.perf_counter() - begin, 1),
                "load_average_before_after": [
                    round(load_before[0], 1),
                    round(os.getloadavg()[0], 1),
                ],
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
                f"{platform.python_version()}",
            }
        )
    )


if __name__ == "__main__":
    main()
