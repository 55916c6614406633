"""Medical domain speed, in one run: DICOM decode throughput and the M3AE training-step cost.

DICOM: ``read_dicom`` (modality LUT + VOI window) over the offline sample written to a temporary
folder, per transfer syntax and overall. M3AE: one optimiser step (forward, backward, AdamW) of
``M3AEPretrainSystem`` on random images and sample-like captions, timed for the same weights with
75 % image masking (joint pass, the default), without masking (the image tower and fusion see
every patch; the reconstruction then covers all patches, so the decoder's work is unchanged) and
with the authors' three passes. Runs are interleaved round by round and the median is reported.
Prints one JSON line: {"bench": "medical", "dicom": {...}, "m3ae_step": {...}}.

``--compare-passes STEPS`` instead trains the reference (three passes, M3AE's objective) and the
joint variant from the same weights on the offline demo sample, alternating one optimiser step of
each (same batches, same order), and reports the median per-step time ratio and, on the held-out
split, both models' losses and accuracies computed as the reference computes them (MLM with the
full image, MIM with clean text, ITM on clean pairs): what each objective learned, on the inputs
a downstream model sees. Prints {"bench": "medical_passes", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from functools import partial
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pydicom  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from domainvlm.core.schedule import warmup_then_decay  # noqa: E402
from domainvlm.domains.medical.datamodule import MedicalPretrainDataModule  # noqa: E402
from domainvlm.domains.medical.dicom import decode_throughput  # noqa: E402
from domainvlm.domains.medical.sample import write_sample  # noqa: E402
from domainvlm.domains.medical.system import M3AEPretrainSystem  # noqa: E402

PRESETS: dict[str, dict] = {
    "tiny": dict(image_size=64, patch=8),  # configs/medical/tiny_pretrain.yaml
    # The paper's proportions at CPU scale: the image stream (256 patches) outweighs the text.
    "small": dict(
        image_size=128,
        patch=8,
        vision_width=192,
        vision_depth=6,
        vision_heads=4,
        text_width=192,
        text_depth=2,
        text_heads=4,
        hidden=192,
        fusion_layers=2,
        fusion_heads=4,
        decoder_width=128,
        decoder_depth=2,
    ),
    # configs/medical/m3ae_base.yaml (a built-in text tower in place of RoBERTa-base)
    "base": dict(
        image_size=288,
        patch=16,
        vision_width=768,
        vision_depth=12,
        vision_heads=12,
        text_width=768,
        text_depth=12,
        text_heads=12,
        hidden=768,
        fusion_layers=6,
        fusion_heads=12,
        mim_layer=3,
        decoder_width=384,
        decoder_depth=4,
        decoder_heads=6,
        context_length=64,
    ),
}
VARIANTS = {
    "joint_masked": dict(passes="joint", image_mask_ratio=0.75),
    "joint_unmasked": dict(passes="joint", image_mask_ratio=0.0),
    "reference_masked": dict(passes="reference", image_mask_ratio=0.75),
}
CAPTION = "Axial CT image of the chest showing a well-defined nodule in the left lung."


def dicom_throughput(repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        root = write_sample(Path(folder) / "sample", size="demo")
        by_syntax: dict[str, list[Path]] = defaultdict(list)
        paths = sorted((root / "images").glob("*.dcm"))
        for path in paths:
            syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            by_syntax[syntax.name].append(path)
        result = {"files": len(paths), "image_side": 128, "overall": decode_throughput(paths)}
        for name, group in sorted(by_syntax.items()):
            stats = decode_throughput(group, repeats=repeats)
            result[name] = {k: round(v, 1) for k, v in stats.items() if k.endswith("_per_s")}
    result["overall"] = {k: round(v, 1) for k, v in result["overall"].items()}
    return result


def step_times(preset: str, batch: int, rounds: int) -> dict:
    torch.manual_seed(0)
    sizes = PRESETS[preset]
    base = M3AEPretrainSystem(**sizes)
    systems = {}
    for name, variant in VARIANTS.items():
        system = M3AEPretrainSystem(**sizes, **variant)
        system.load_state_dict(base.state_dict())
        systems[name] = (system, torch.optim.AdamW(system.parameters(), lr=1e-4))
    image_size = sizes["image_size"]
    data = {
        "image": torch.randn(batch, 3, image_size, image_size),
        "text": [f"{CAPTION} Case {i}." for i in range(batch)],
    }
    times: dict[str, list[float]] = {name: [] for name in systems}
    for round_index in range(rounds + 1):
        for name, (system, optimizer) in systems.items():
            start = time.perf_counter()
            system.compute_losses(data, "train")["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if round_index:  # round 0 warms up allocators and kernels
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    grid = image_size // sizes["patch"]
    return {
        "preset": preset,
        "batch": batch,
        "rounds": rounds,
        "patches": grid * grid,
        "params_m": round(sum(p.numel() for p in base.parameters()) / 1e6, 2),
        **{f"{name}_s": round(value, 4) for name, value in medians.items()},
        "unmasked_over_masked": round(medians["joint_unmasked"] / medians["joint_masked"], 2),
        "reference_over_joint": round(medians["reference_masked"] / medians["joint_masked"], 2),
    }


TINY_CONFIG = Path(__file__).parents[1] / "configs" / "medical" / "tiny_pretrain.yaml"
QUALITY = ("loss", "mlm", "mim", "itm", "mlm_acc", "itm_acc")


def compare_passes(steps: int, batch: int, seed: int) -> dict:
    """Equal optimiser steps of both objectives (tiny_pretrain.yaml's model and optimiser, M3AE's
    three losses), alternating step by step; held-out quality measured the reference's way."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    model_args = {**config["model"]["init_args"], "loss_weights": {"itc": 0.0}}
    data_args = {**config["data"]["init_args"], "batch_size": batch, "num_workers": 0}
    with tempfile.TemporaryDirectory() as folder:
        data_args["root"] = str(write_sample(Path(folder) / "sample", size="demo"))
        datamodule = MedicalPretrainDataModule(**data_args, seed=seed)
        datamodule.setup("fit")
        torch.manual_seed(seed)
        base = M3AEPretrainSystem(**model_args)
        arms = {}
        for passes in ("reference", "joint"):
            system = M3AEPretrainSystem(**{**model_args, "passes": passes})
            system.load_state_dict(base.state_dict())
            optimizer = torch.optim.AdamW(
                system.parameter_groups(), lr=system.hparams.lr, betas=tuple(system.hparams.betas)
            )
            warmup = int(system.hparams.warmup * steps)
            shape = partial(
                warmup_then_decay, total_steps=steps, warmup_steps=warmup, decay="linear"
            )
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, shape)
            arms[passes] = (system, optimizer, schedule)
        times: dict[str, list[float]] = {name: [] for name in arms}
        done = 0
        while done < steps:
            for data in datamodule.loader("train", shuffle=True):
                if done == steps:
                    break
                for name, (system, optimizer, schedule) in arms.items():
                    torch.manual_seed(seed + done)  # same masks and ITM pairs for both arms
                    start = time.perf_counter()
                    system.compute_losses(data, "train")["loss"].backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    times[name].append(time.perf_counter() - start)
                    schedule.step()
                done += 1
        held_out = {
            name: held_out_quality(system, datamodule) for name, (system, _, _) in arms.items()
        }
    ratios = [r / j for r, j in zip(times["reference"][1:], times["joint"][1:], strict=True)]
    return {
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "reference_step_s": round(statistics.median(times["reference"][1:]), 4),
        "joint_step_s": round(statistics.median(times["joint"][1:]), 4),
        "reference_over_joint_median": round(statistics.median(ratios), 2),
        "held_out": held_out,
        "held_out_items": len(datamodule.dataset("val")),
    }


@torch.no_grad()
def held_out_quality(system: M3AEPretrainSystem, datamodule: MedicalPretrainDataModule) -> dict:
    """Validation losses and accuracies with the reference passes (clean partners)."""
    system.eval()
    system.hparams.passes = "reference"
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for data in datamodule.loader("val"):
        losses = system.compute_losses(data, "val")
        rows = len(data["text"])
        for name in QUALITY:
            sums[name] += float(losses[name]) * rows
        count += rows
    return {name: round(total / count, 4) for name, total in sums.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--dicom-repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--compare-passes",
        type=int,
        metavar="STEPS",
        help="train reference and joint for STEPS alternating steps on the demo sample instead",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare_passes:
        result = {
            "bench": "medical_passes",
            **compare_passes(args.compare_passes, args.batch, args.seed),
            "torch": torch.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
        }
        print(json.dumps(result))
        return
    result = {
        "bench": "medical",
        "dicom": dicom_throughput(args.dicom_repeats),
        "m3ae_step": step_times(args.preset, args.batch, args.rounds),
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
