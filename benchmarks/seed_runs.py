"""What the seed benchmarks share: running ``domainvlm`` commands timed, one sample for every run,
runs side by side, and one JSON line per run plus a summary line with the machine and its load."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DVLM = [str(Path(sys.executable).with_name("domainvlm"))]


def timed(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` (output to ``log``); wall and CPU seconds, its waited-for workers included."""
    begin = time.perf_counter()
    with log.open("a") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed; see {log}")
    return time.perf_counter() - begin, usage.ru_utime + usage.ru_stime


def mean_std(values: list[float]) -> list[float]:
    """[mean, sample std] rounded to 0.1 (std 0 for one value)."""
    return [
        round(statistics.mean(values), 1),
        round(statistics.stdev(values), 1) if len(values) > 1 else 0.0,
    ]


def add_arguments(parser: argparse.ArgumentParser, out: str, arms: list[str]) -> None:
    parser.add_argument("--out", type=Path, default=Path(out))
    parser.add_argument("--size", default="demo", help="sample size (small, demo)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=arms, choices=arms)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument(
        "--collect", action="store_true", help="only summarise the finished runs under --out"
    )


def run_seeds(
    bench: str,
    domain: str,
    args: argparse.Namespace,
    run: Callable[[str, int, Path], dict],
    summarise: Callable[[list[dict]], dict],
    **extra: object,
) -> None:
    """``run(arm, seed, sample)`` for every arm and seed on one ``domain`` sample under
    ``args.out`` (``args.jobs`` at once), then print each run and the summary as JSON lines."""
    if args.collect:
        rows = [json.loads(path.read_text()) for path in sorted(args.out.glob("*/result.json"))]
        print(json.dumps({"bench": bench, "runs": len(rows), "summary": summarise(rows)}))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    sample = args.out / "sample"
    if not (sample / "README.txt").is_file():
        command = [*DVLM, "sample-data", domain, "--out", str(sample), "--size", args.size]
        timed(command, args.out / "sample_log.txt")
    load_before = os.getloadavg()
    begin = time.perf_counter()
    jobs = [(arm, seed) for seed in args.seeds for arm in args.arms]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda job: run(job[0], job[1], sample), jobs))
    for row in rows:
        print(json.dumps({"bench": bench, **row}))
    summary = {
        "bench": bench,
        "summary": summarise(rows),
        **extra,
        "size": args.size,
        "wall_s": round(time.perf_counter() - begin, 1),
        "load_average_before_after": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
    }
    print(json.dumps(summary))
