"""Few-shot adaptation to a held-out remote-sensing scene task: LoRA, full fine-tuning, a linear
probe on frozen features, and zero-shot.

A base RSMCLIP (dvlm-tiny, RGB+NIR, distillation off) is pretrained contrastively on the
captions (five languages per chip) of the demo sample's chips of six scene classes; the four other classes (their chips and
names never seen by the base) are the held-out task. Each method gets ``--shots`` chips per class;
all are tested on the remaining chips of those classes. LoRA and full fine-tuning train the same
FLYP-style objective (image against the class prompts, cross-entropy over the classes) for the same
steps and classify zero-shot afterwards; the probe is a logistic regression on frozen image
embeddings. Prints one JSON line per method: acc1, trainable parameters, step time, checkpoint size
(LoRA: the adapter file; full: the whole checkpoint; probe: the linear layer).

    python benchmarks/adapt.py [--shots 8] [--steps 40] [--pretrain-steps 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from domainvlm.core.losses import clip_loss
from domainvlm.domains.remote_sensing.knowledge import class_names
from domainvlm.domains.remote_sensing.rasters import read_raster
from domainvlm.domains.remote_sensing.sample import write_sample
from domainvlm.domains.remote_sensing.system import RSMCLIP

HELD_OUT = ("Highway", "Industrial", "River", "SeaLake")
TEMPLATE = "a satellite image of {}."


def load_chips(root: Path) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Every chip of the sample, band-normalised, with its class and its captions (5 languages)."""
    manifest = json.loads((root / "dataset_rsmclip.json").read_text())
    images, labels, captions = [], [], []
    for entry in manifest["images"]:
        chip = read_raster(root / "images" / entry["filename"]).array  # HWC
        images.append(chip.transpose(2, 0, 1).astype(np.float32) / 10_000)
        labels.append(entry["scene_class"])
        captions.append([sentence["raw"] for sentence in entry["sentences"]])
    pixels = torch.from_numpy(np.stack(images))
    mean, std = pixels.mean((0, 2, 3), keepdim=True), pixels.std((0, 2, 3), keepdim=True)
    return (pixels - mean) / std, labels, captions


def new_system(peft: dict | None = None) -> RSMCLIP:
    torch.manual_seed(0)
    system = RSMCLIP(in_chans=4, distill_weight=0.0, peft=peft)
    system.configure_model()
    return system


def save(system: RSMCLIP, path: Path) -> int:
    checkpoint = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path.stat().st_size


def pretrain(images: torch.Tensor, captions: list[list[str]], steps: int, out: Path) -> Path:
    system = new_system().train()
    optimizer = torch.optim.AdamW(system.parameters(), lr=1e-3, weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randperm(len(images), generator=generator)[:32]
        image = F.normalize(system.encode_image(images[batch]), dim=-1)
        chosen = [captions[i][int(torch.randint(len(captions[i]), (1,)))] for i in batch]
        text = F.normalize(system.encode_text(chosen), dim=-1)
        loss = clip_loss(image, text, system.logit_scale())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        system.logit_scale.clamp_()
    save(system.eval(), out)
    return out


@torch.no_grad()
def accuracy(system: RSMCLIP, images: torch.Tensor, targets: torch.Tensor, prompts: list[str]):
    system.eval()
    text = F.normalize(system.encode_text(prompts), dim=-1)
    image = F.normalize(system.encode_image(images), dim=-1)
    return float(((image @ text.T).argmax(1) == targets).float().mean())


def finetune(system, images, targets, prompts, steps: int, lr: float) -> float:
    """FLYP-style: every shot against all class prompts; returns the mean step time in ms."""
    params = [p for p in system.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    system.train()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        image = F.normalize(system.encode_image(images), dim=-1)
        text = F.normalize(system.encode_text(prompts), dim=-1)
        loss = F.cross_entropy(system.logit_scale() * image @ text.T, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def linear_probe(system, train_x, train_y, test_x, test_y, classes: int, out: Path) -> dict:
    with torch.no_grad():
        system.eval()
        features = F.normalize(system.encode_image(torch.cat([train_x, test_x])), dim=-1)
    train_f, test_f = features[: len(train_x)], features[len(train_x) :]
    head = torch.nn.Linear(train_f.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
    times = []
    for _ in range(300):
        start = time.perf_counter()
        loss = F.cross_entropy(head(train_f * 10), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    torch.save(head.state_dict(), out)
    acc = float((head(test_f * 10).argmax(1) == test_y).float().mean())
    return {
        "acc1": acc,
        "trainable_params": sum(p.numel() for p in head.parameters()),
        "step_ms": 1000 * float(np.median(times)),
        "checkpoint_bytes": out.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lora-lr", type=float, default=5e-3)
    parser.add_argument("--sample", type=Path, help="the demo sample (written here if missing)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample = args.sample or root / "sample"
        if not (sample / "dataset_rsmclip.json").is_file():
            write_sample(sample, "demo")
        images, labels, captions = load_chips(sample)
        seen = [i for i, label in enumerate(labels) if label not in HELD_OUT]
        start = time.perf_counter()
        base = pretrain(images[seen], [captions[i] for i in seen], args.pretrain_steps, root / "b")
        print(f"base pretrained in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        names = class_names("EuroSAT")
        prompts = [TEMPLATE.format(names[c]) for c in HELD_OUT]
        rng = np.random.default_rng(0)
        shots, test = [], []
        for k, cls in enumerate(HELD_OUT):
            members = rng.permutation([i for i, label in enumerate(labels) if label == cls])
            shots += [(i, k) for i in members[: args.shots]]
            test += [(i, k) for i in members[args.shots :]]
        train_x, train_y = images[[i for i, _ in shots]], torch.tensor([k for _, k in shots])
        test_x, test_y = images[[i for i, _ in test]], torch.tensor([k for _, k in test])
        common = {"task": "held-out RS scenes", "classes": len(HELD_OUT), "shots": args.shots}
        common["test_images"] = len(test)
        rows = {}
        zero = new_system({"base": str(base), "method": "full"})
        rows["zero-shot"] = {
            "acc1": accuracy(zero, test_x, test_y, prompts),
            "trainable_params": 0,
            "step_ms": 0.0,
            "checkpoint_bytes": 0,
        }
        rows["linear probe"] = linear_probe(
            zero, train_x, train_y, test_x, test_y, len(HELD_OUT), root / "probe.pt"
        )
        for method, peft, lr in (
            ("lora", {"base": str(base), "r": args.rank, "alpha": 2 * args.rank}, args.lora_lr),
            ("full fine-tuning", {"base": str(base), "method": "full"}, 1e-4),
        ):
            system = new_system(peft)
            step_ms = finetune(system, train_x, train_y, prompts, args.steps, lr)
            print(f"{method}: {step_ms:.0f} ms/step", file=sys.stderr)
            rows[method] = {
                "acc1": accuracy(system, test_x, test_y, prompts),
                "trainable_params": sum(p.numel() for p in system.parameters() if p.requires_grad),
                "step_ms": step_ms,
                "checkpoint_bytes": save(system, root / f"{method}.ckpt"),
            }
        for method, row in rows.items():
            print(json.dumps({**common, "method": method, **row, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
