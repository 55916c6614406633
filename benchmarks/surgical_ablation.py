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
from pathlib import Path

from seed_runs import DVLM, add_arguments, mean_std, run_seeds, timed

CONFIGS = Path(__file__).parents[1] / "configs" / "surgical"
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
            metric: mean_std([r[metric] for r in runs]) for metric in (*METRICS, "fit_cpu_s")
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser, "runs/surgical/ablation", list(ARMS))
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    run_seeds(
        "surgical_ablation",
        "surgical",
        args,
        lambda arm, seed, sample: run(arm, seed, sample, args.out, args.epochs),
        summarise,
        epochs=args.epochs,
    )


if __name__ == "__main__":
    main()
