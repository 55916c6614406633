"""A few bf16-mixed training steps of every shipped tiny config, on the CPU or a GPU.

Each domain's small sample is written first; configs that start from another run's checkpoint
(``init_from``: the semantic experts, medical VQA) get the checkpoint of the run before them.
Every config runs as ``domainvlm fit`` in its own process, so one failure never hides the rest.
Runs land in ``--work`` as ``<domain>_<config>/`` and samples in ``--work/samples/<domain>``.
Prints one JSON line per config: ``{"check": "bf16_steps", "config", "ok", "loss_first",
"loss_last", "seconds"}`` (losses from the run's CSV log, every step logged); exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# (config, domain of its sample, the config whose last.ckpt it starts from)
RUNS = [
    ("remote_sensing/tiny.yaml", "remote_sensing", None),
    ("remote_sensing/semantic_experts.yaml", "remote_sensing", "remote_sensing/tiny.yaml"),
    ("remote_sensing/semantic_experts_vqa.yaml", "remote_sensing", "remote_sensing/tiny.yaml"),
    ("medical/tiny_pretrain.yaml", "medical", None),
    ("medical/tiny_vqa.yaml", "medical", "medical/tiny_pretrain.yaml"),
    ("comics/tiny.yaml", "comics", None),
    ("comics/closure.yaml", "comics", None),
    ("surgical/tiny.yaml", "surgical", None),
]


def write_samples(root: Path, domains: set[str]) -> dict[str, Path]:
    from domainvlm.core.registry import get_domain

    return {name: get_domain(name).write_sample(root / name, size="small") for name in domains}


def run_config(
    config: str, data_root: Path, work: Path, init_from: Path | None, args: argparse.Namespace
) -> dict:
    settings = yaml.safe_load((CONFIGS / config).read_text())
    run_dir = work / config.replace("/", "_").removesuffix(".yaml")
    settings["trainer"].update(
        accelerator=args.accelerator,
        precision="bf16-mixed",
        max_epochs=1,
        limit_train_batches=args.steps,
        limit_val_batches=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        default_root_dir=str(run_dir),
    )
    settings["trainer"].pop("max_time", None)
    settings["data"]["init_args"].update(root=str(data_root), batch_size=8, num_workers=0)
    if init_from is not None:
        settings["model"]["init_args"]["init_from"] = str(init_from)
    path = work / f"{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(settings))
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-m", "domainvlm.core.cli", "fit", "--config", str(path)],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    losses = train_losses(run_dir)
    ok = process.returncode == 0 and bool(losses) and all(math.isfinite(v) for v in losses)
    result = {
        "check": "bf16_steps",
        "config": config,
        "accelerator": args.accelerator,
        "ok": ok,
        "steps": len(losses),
        "loss_first": round(losses[0], 4) if losses else None,
        "loss_last": round(losses[-1], 4) if losses else None,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if process.returncode != 0:
        result["error"] = (process.stderr.strip().splitlines() or ["(no output)"])[-1][-300:]
    return result


def train_losses(run_dir: Path) -> list[float]:
    """Per-step ``train/loss`` (or the first ``train/`` column) from the CSV logger."""
    logs = sorted(run_dir.glob("logs/version_*/metrics.csv"))
    if not logs:
        return []
    with logs[-1].open() as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in (rows[0] if rows else {}) if c.startswith("train/")]
    column = "train/loss" if "train/loss" in columns else (columns[0] if columns else None)
    if column is None:
        return []
    return [float(row[column]) for row in rows if row.get(column)]


def checkpoint_of(work: Path, config: str) -> Path:
    name = config.replace("/", "_").removesuffix(".yaml")
    return work / name / "checkpoints" / "last.ckpt"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accelerator", default="cpu", help="cpu or gpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="*", help="a subset, e.g. remote_sensing/tiny.yaml")
    parser.add_argument(
        "--work", type=Path, help="keep samples and runs here (default: a temporary folder)"
    )
    args = parser.parse_args()
    runs = [run for run in RUNS if not args.configs or run[0] in args.configs]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="dvlm-bf16-") as folder:
        work = (args.work or Path(folder)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        samples = write_samples(work / "samples", {domain for _, domain, _ in runs})
        for config, domain, parent in runs:
            init_from = checkpoint_of(work, parent) if parent else None
            if parent and not any(parent == run[0] for run in runs):
                result = run_config(parent, samples[domain], work, None, args)
                failed += not result["ok"]
                print(json.dumps(result), flush=True)
            result = run_config(config, samples[domain], work, init_from, args)
            failed += not result["ok"]
            print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
