"""Surgical objective ablation: clip level only vs + HecVL phase level vs + PeskaVLP procedure
alignment vs + the full HecVL hierarchy (phase and video levels), over several seeds.

Each arm is ``configs/surgical/tiny.yaml`` plus the shipped second configs (``hierarchy.yaml``,
``procedure.yaml``), trained with ``domainvlm fit`` on one sample written by
``domainvlm sample-data surgical`` and scored on its held-out videos with ``eval phases``
(accuracy and macro-F1 per video, averaged) and ``eval retrieval`` (text→clip R@5, mR). Epochs
are a flag: on a shared machine the runs are short, and every level's schedule (phase every 3rd
epoch, video every 5th) includes epoch 0, so a one-epoch run trains every arm's terms once.
Each run's result is kept in ``OUT/<arm>_seed<seed>/result.json`` and a rerun skips finished
runs (a long ablation on a shared machine can be stopped and resumed). Prints one JSON line per
run, then one with mean ± sample std per arm.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONFIGS = Path(__file__).parents[1] / "configs" / "surgical"
DVLM = [str(Path(sys.executable).with_name("domainvlm"))]
ARMS = {
    "clip": [],
    "phase": [
        "--config", str(CONFIGS / "hierarchy.yaml"),
        "--model.init_args.video_weight", "0", "--data.init_args.video_frames", "0",
    ],
    "procedure": ["--config", str(CONFIGS / "procedure.yaml")],
    "hierarchy": ["--config", str(CONFIGS / "hierarchy.yaml")],
}  # fmt: skip
"""Arm → the arguments after ``--config tiny.yaml``."""
METRICS = ("accuracy", "macro_f1", "text_to_clip_r5", "mean_recall")


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` (output to ``log``); wall and CPU seconds, its waited-for workers included."""
    begin = time.perf_counter()
    with log.open("a") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - begin, usage.ru_utime + usage.ru_stime


def run(arm: str, seed: int, sample: Path, out: Path, epochs: int) -> dict:
    folder = out / f"{arm}_seed{seed}"
    if (folder / "result.json").is_file():
        return json.loads((folder / "result.json").read_text())
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    fit = [
        *DVLM, "fit", "--config", str(CONFIGS / "tiny.yaml"), *ARMS[arm],
        "--seed_everything", str(seed), "--trainer.max_epochs", str(epochs),
        "--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false",
        "--data.init_args.root", str(sample),
    ]  # fmt: skip
    wall, cpu = timed(fit, log)
    checkpoint = folder / "checkpoints" / "last.ckpt"
    for task in ("phases", "retrieval"):
        timed(
            [*DVLM, "eval", task, "--checkpoint", str(checkpoint), "--data", str(sample),
             "--out", str(folder / f"{task}.json")],
            log,
        )  # fmt: skip
    phases = json.loads((folder / "phases.json").read_text())
    retrieval = json.loads((folder / "retrieval.json").read_text())
    result = {
        "arm": arm,
        "seed": seed,
        "fit_wall_s": round(wall, 1),
        "fit_cpu_s": round(cpu, 1),
        "accuracy": 100 * phases["mean_group_accuracy"],
        "macro_f1": 100 * phases["mean_group_macro_f1"],
        "text_to_clip_r5": 100 * retrieval["image_retrieval_recall@5"],
        "mean_recall": 100 * retrieval["mean_recall"],
        "load_average": round(os.getloadavg()[0], 1),
    }
    (folder / "result.json").write_text(json.dumps(result))
    return result


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for arm in ARMS:
        runs = [row for row in rows if row["arm"] == arm]
        if not runs:
            continue
        summary[arm] = {
            metric: [
                round(statistics.mean(r[metric] for r in runs), 1),
                round(statistics.stdev(r[metric] for r in runs), 1) if len(runs) > 1 else 0.0,
            ]
            for metric in (*METRICS, "fit_cpu_s")
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/surgical/ablation"))
    parser.add_argument("--size", default="demo", help="sample size (small, demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument(
        "--collect", action="store_true", help="only summarise the finished runs under --out"
    )
    args = parser.parse_args()
    if args.collect:
        rows = [json.loads(path.read_text()) for path in sorted(args.out.glob("*/result.json"))]
        print(
            json.dumps(
                {"bench": "surgical_ablation", "runs": len(rows), "summary": summarise(rows)}
            )
        )
        return

    args.out.mkdir(parents=True, exist_ok=True)
    sample = args.out / "sample"
    if not (sample / "README.txt").is_file():
        command = [*DVLM, "sample-data", "surgical", "--out", str(sample), "--size", args.size]
        timed(command, args.out / "sample_log.txt")
    load_before = os.getloadavg()
    begin = time.perf_counter()
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run(job[0], job[1], sample, args.out, args.epochs), jobs))
    for row in rows:
        print(json.dumps({"bench": "surgical_ablation", **row}))
    print(
        json.dumps(
            {
                "bench": "surgical_ablation",
                "summary": summarise(rows),
                "epochs": args.epochs,
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
