"""Token merging: image throughput and zero-shot accuracy against the same model without it.

Two models, one run:

* ``trained``: an RS-M-CLIP system trained here on the remote-sensing sample (``demo`` size) with a
  112 px, patch-8 ViT (1 + 196 = 197 tokens, like ViT-B/16 at 224). Reused from ``--run-dir`` when
  it is already there, else trained first (a few minutes on 2 CPU cores). Zero-shot top-1 is
  measured on every split of the sample's scene classes (800 images) and on its test split alone,
  for each merge rate, ToMe and PiToMe.
* ``vit_b16``: open_clip ViT-B-16 at 224 px (197 tokens) with random weights, speed only.

Throughput: the same batch through the same module, merging applied and removed between sides;
the sides alternate in rounds (and swap which goes first), so machine load hits both alike, and
the reported ``speedup`` is the median of the per-round ratios. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import open_clip  # noqa: E402
import torch  # noqa: E402
from domainvlm.core.cli import main as domainvlm_main  # noqa: E402
from domainvlm.core.encoder_loader import load_encoder  # noqa: E402
from domainvlm.core.metrics import zeroshot_metrics  # noqa: E402
from domainvlm.core.towers.clip import build_clip  # noqa: E402
from domainvlm.core.towers.token_merging import (  # noqa: E402
    TokenMerging,
    apply_token_merging,
    remove_token_merging,
)
from domainvlm.core.zeroshot import LOGIT_SCALE, ZeroShotClassifier  # noqa: E402
from domainvlm.domains.remote_sensing.evaluation_data import zeroshot_data  # noqa: E402
from domainvlm.domains.remote_sensing.sample import write_sample  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "dvlm-tiny-112"
MODEL_CONFIG = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 112, "patch_size": 8, "width": 128, "head_width": 32},
    "text_cfg": {"context_length": 96, "vocab_size": 260, "width": 128, "heads": 4, "layers": 4},
}
SPLITS = ("train", "val", "test")


def register_model(run_dir: Path, layers: int) -> None:
    """The 197-token tiny config, kept beside the run so its checkpoint always rebuilds."""
    folder = run_dir / "model_configs"
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(MODEL_CONFIG))
    config["vision_cfg"]["layers"] = layers
    (folder / f"{MODEL_NAME}.json").write_text(json.dumps(config, indent=2))
    open_clip.add_model_config(folder)


def trained_checkpoint(args: argparse.Namespace) -> Path:
    checkpoint = args.run_dir / "checkpoints" / "last.ckpt"
    if checkpoint.is_file():
        return checkpoint
    if not (args.data / "scene_classes").is_dir():
        write_sample(args.data, size="demo")
    code = domainvlm_main(
        [
            "fit",
            "--config", str(REPO / "configs" / "remote_sensing" / "tiny.yaml"),
            "--model.init_args.model_name", MODEL_NAME,
            "--model.init_args.distill_weight", "0",
            "--data.init_args.root", str(args.data),
            "--data.init_args.image_size", "112",
            "--data.init_args.multicrop", "false",
            "--trainer.max_epochs", str(args.epochs),
            "--trainer.default_root_dir", str(args.run_dir),
            "--trainer.enable_progress_bar", "false",
        ]
    )  # fmt: skip
    if code != 0 or not checkpoint.is_file():
        raise SystemExit(f"training the benchmark model failed (exit {code})")
    return checkpoint


def timed(run: Callable[[], object], device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def speedup(
    model: nn.Module, encode: Callable[[], object], merging: TokenMerging, rounds: int, device: str
) -> dict:
    """Median over rounds of (time without merging / time with it), sides alternating."""
    ratios, plain_times, merged_times = [], [], []
    for index in range(rounds):
        sides = ("plain", "merged") if index % 2 == 0 else ("merged", "plain")
        seconds = {}
        for side in sides:
            remove_token_merging(model)
            if side == "merged":
                apply_token_merging(model, merging)
            seconds[side] = timed(encode, device)
        remove_token_merging(model)
        ratios.append(seconds["plain"] / seconds["merged"])
        plain_times.append(seconds["plain"])
        merged_times.append(seconds["merged"])
    return {
        "speedup": round(statistics.median(ratios), 3),
        "plain_s": round(statistics.median(plain_times), 4),
        "merged_s": round(statistics.median(merged_times), 4),
    }


def sweep(tome_rates: list[int], pitome_rates: list[int]) -> list[tuple[bool, int]]:
    """(energy, r) pairs: ToMe's rates, then PiToMe's."""
    return [(False, r) for r in tome_rates] + [(True, r) for r in pitome_rates]


def warm_up(model: nn.Module, encode: Callable[[], object], merging: TokenMerging) -> None:
    encode()
    apply_token_merging(model, merging)
    encode()
    remove_token_merging(model)


def trained_curve(args: argparse.Namespace) -> dict:
    register_model(args.run_dir, args.layers)
    checkpoint = trained_checkpoint(args)
    encoder = load_encoder(str(checkpoint), args.device)
    (model,) = encoder.modules
    classifier = ZeroShotClassifier(encoder, batch_size=args.batch)
    sets = {split: zeroshot_data(args.data, split) for split in SPLITS}
    weights = classifier.class_weights(sets["test"].classnames, sets["test"].templates)
    images = {
        split: torch.stack([encoder.load_image(p) for p in sets[split].paths]) for split in SPLITS
    }
    labels = {split: torch.tensor(sets[split].labels) for split in SPLITS}

    def accuracy() -> dict:
        correct = {}
        for split in SPLITS:
            logits = torch.cat(
                [LOGIT_SCALE * encoder.encode_images(b) @ weights.T
                 for b in images[split].split(args.batch)]
            )  # fmt: skip
            correct[split] = zeroshot_metrics(logits, labels[split])["acc1"]
        total = sum(len(labels[s]) for s in SPLITS)
        overall = sum(correct[s] * len(labels[s]) for s in SPLITS) / total
        return {"acc1_all": round(100 * overall, 2), "acc1_test": round(100 * correct["test"], 2)}

    baseline = accuracy()
    batch = images["test"][: args.batch]
    tokens = 1 + (batch.shape[-1] // model.visual.patch_size[0]) ** 2

    @torch.no_grad()
    def encode() -> Tensor:
        return encoder.encode_images(batch)

    rows = []
    for energy, rate in sweep(args.rates, args.pitome_rates):
        merging = TokenMerging(rate, energy=energy)
        warm_up(model, encode, merging)
        row = {"method": "pitome" if energy else "tome", "r": rate}
        row |= speedup(model, encode, merging, args.rounds, args.device)
        apply_token_merging(model, merging)
        measured = accuracy()
        remove_token_merging(model)
        row |= measured
        row["acc1_all_change"] = round(measured["acc1_all"] - baseline["acc1_all"], 2)
        row["acc1_test_change"] = round(measured["acc1_test"] - baseline["acc1_test"], 2)
        rows.append(row)
    return {
        "model": f"{MODEL_NAME} ({args.layers} layers), trained on the RS sample",
        "tokens": tokens,
        "images_all": sum(len(labels[s]) for s in SPLITS),
        "images_test": len(labels["test"]),
        "baseline": baseline,
        "batch": len(batch),
        "curve": rows,
    }


def vit_b16_curve(args: argparse.Namespace) -> dict:
    torch.manual_seed(0)
    model, _ = build_clip("ViT-B-16")
    model.eval().to(args.device)
    images = torch.randn(args.vit_batch, 3, 224, 224, device=args.device)

    @torch.no_grad()
    def encode() -> Tensor:
        return model.encode_image(images)

    rows = []
    for energy, rate in sweep(args.vit_rates, args.vit_pitome_rates):
        merging = TokenMerging(rate, energy=energy)
        warm_up(model, encode, merging)
        row = {"method": "pitome" if energy else "tome", "r": rate}
        rows.append(row | speedup(model, encode, merging, args.rounds, args.device))
    return {"model": "ViT-B-16 (random weights)", "tokens": 197, "batch": args.vit_batch,
            "curve": rows}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "samples" / "rs_demo")
    parser.add_argument("--run-dir", type=Path, default=REPO / "runs" / "bench_token_merging")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs if none is saved")
    parser.add_argument("--layers", type=int, default=4, help="ViT depth of the trained model")
    # r = 1 merges almost nothing: it shows what the merging code path alone costs or saves
    parser.add_argument("--rates", type=int, nargs="+", default=[1, 8, 16, 24, 32, 40])
    parser.add_argument("--pitome-rates", type=int, nargs="*", default=[16, 32])
    parser.add_argument("--vit-rates", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--vit-pitome-rates", type=int, nargs="*", default=[8])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--vit-batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-vit-b16", action="store_true")
    parser.add_argument("--skip-trained", action="store_true", help="ViT-B-16 speed only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    result = {
        "benchmark": "token_merging",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": args.device,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "rounds": args.rounds,
        "torch": torch.__version__,
    }
    if not args.skip_trained:
        result["trained"] = trained_curve(args)
    if not args.skip_vit_b16:
        result["vit_b16"] = vit_b16_curve(args)
    result["wall_s"] = round(time.time() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
