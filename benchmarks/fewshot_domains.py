"""The two domains of ``benchmarks/adapt.py`` and ``benchmarks/merge.py``: their sample data, the
pretraining of a base, the systems, and how a system scores images against class prompts.

- remote sensing: RSMCLIP (dvlm-tiny, RGB+NIR, distillation off) pretrained contrastively on the
  captions (five languages per chip) of the demo sample's chips of the scene classes outside every
  task, so a task's chips and class names are never seen by the base. Scores: logit scale × cosine.
- medical: M3AEPretrainSystem with the model sizes of ``configs/medical/tiny_pretrain.yaml``
  (joint pass, MLM + MIM + ITM + ITC) pretrained on the captions of the demo sample's training
  split; tasks are organ (chest / brain / abdomen, what ``eval zeroshot`` scores) and modality (CT /
  radiograph), tested on the held-out split. Scores: ITM log-odds of each prompt, averaged over
  the templates, as ``eval zeroshot`` scores the medical model.

Few-shot examples are drawn per class from the training pool; tests (and validation halves, for
merging) from the evaluation pool: all chips of the class for remote sensing (shots excluded), the
held-out split for medical.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from domainvlm.core.losses import clip_loss
from domainvlm.domains.medical.knowledge import read_cases
from domainvlm.domains.medical.sample import write_sample as write_medical_sample
from domainvlm.domains.medical.system import M3AEPretrainSystem
from domainvlm.domains.medical.templates import templates as medical_templates
from domainvlm.domains.remote_sensing.knowledge import class_names
from domainvlm.domains.remote_sensing.rasters import read_raster
from domainvlm.domains.remote_sensing.sample import write_sample as write_rs_sample
from domainvlm.domains.remote_sensing.system import RSMCLIP
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
MEDICAL_CONFIG = REPO / "configs" / "medical" / "tiny_pretrain.yaml"
MEDICAL_TOWERS = (
    r"backbone\.(vision\.visual\.transformer\.resblocks\.\d+\.attn"
    r"|text\.blocks\.\d+\.self_attn|fusion\.\d+\.(image|text)\.(self|cross)_attention)"
)


@dataclass(frozen=True)
class Task:
    """Classes of one attribute of the data and each class's prompts (averaged when scored)."""

    name: str
    attribute: str
    classes: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]


def save(system: nn.Module, path: Path) -> int:
    """What Lightning would write for the system (enough for ``load_system``); bytes on disk."""
    checkpoint = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path.stat().st_size


def split(domain, task: Task, shots: int, rng: np.random.Generator, halves: bool = False):
    """``{"train", "test"}`` (``halves``: also ``"val"``, half of each class's evaluation items) as
    ``(images, class indices)``."""
    parts: dict[str, list[tuple[int, int]]] = {"train": [], "val": [], "test": []}
    labels = domain.attributes[task.attribute]
    for k, cls in enumerate(task.classes):
        pool = rng.permutation([i for i in domain.pools["train"] if labels[i] == cls])
        chosen = set(pool[:shots].tolist())
        rest = rng.permutation(
            [i for i in domain.pools["eval"] if labels[i] == cls and i not in chosen]
        )
        parts["train"] += [(int(i), k) for i in pool[:shots]]
        cut = len(rest) // 2 if halves else 0
        parts["val"] += [(int(i), k) for i in rest[:cut]]
        parts["test"] += [(int(i), k) for i in rest[cut:]]
    return {
        part: (domain.images[[i for i, _ in rows]], torch.tensor([k for _, k in rows]))
        for part, rows in parts.items()
        if rows
    }


class RemoteSensing:
    """The demo remote-sensing sample: 800 RGB+NIR chips of ten EuroSAT classes."""

    name = "remote_sensing"
    lora = {"r": 4, "alpha": 8}  # the attention of both towers (the default targets)
    lora_lr, full_lr = 5e-3, 1e-4
    adapt_task = ("Highway", "Industrial", "River", "SeaLake")
    merge_tasks = {
        "built": ("Highway", "Industrial", "Residential"),
        "water": ("River", "SeaLake", "PermanentCrop"),
    }

    def __init__(self, sample: Path) -> None:
        if not (sample / "dataset_rsmclip.json").is_file():
            write_rs_sample(sample, "demo")
        manifest = json.loads((sample / "dataset_rsmclip.json").read_text())
        chips, labels, self.captions = [], [], []
        for entry in manifest["images"]:
            chip = read_raster(sample / "images" / entry["filename"]).array  # HWC
            chips.append(chip.transpose(2, 0, 1).astype(np.float32) / 10_000)
            labels.append(entry["scene_class"])
            self.captions.append([sentence["raw"] for sentence in entry["sentences"]])
        pixels = torch.from_numpy(np.stack(chips))
        mean, std = pixels.mean((0, 2, 3), keepdim=True), pixels.std((0, 2, 3), keepdim=True)
        self.images = (pixels - mean) / std
        self.attributes = {"scene": labels}
        everything = list(range(len(labels)))
        self.pools = {"train": everything, "eval": everything}

    def task(self, name: str, classes: tuple[str, ...]) -> Task:
        names = class_names("EuroSAT")
        prompts = tuple((f"a satellite image of {names[c]}.",) for c in classes)
        return Task(name, "scene", classes, prompts)

    def new_system(self, peft: dict | None = None, seed: int = 0) -> RSMCLIP:
        torch.manual_seed(seed)
        system = RSMCLIP(in_chans=4, distill_weight=0.0, peft=peft)
        system.configure_model()
        return system

    def pretrain(self, excluded: set[str], steps: int, seed: int, out: Path) -> Path:
        """CLIP loss on the captions of every chip whose class is not ``excluded``."""
        keep = [i for i, label in enumerate(self.attributes["scene"]) if label not in excluded]
        system = self.new_system(seed=seed).train()
        optimizer = torch.optim.AdamW(system.parameters(), lr=1e-3, weight_decay=0.1)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = [keep[i] for i in torch.randperm(len(keep), generator=generator)[:32]]
            image = F.normalize(system.encode_image(self.images[batch]), dim=-1)
            chosen = [
                self.captions[i][
                    int(torch.randint(len(self.captions[i]), (1,), generator=generator))
                ]
                for i in batch
            ]
            text = F.normalize(system.encode_text(chosen), dim=-1)
            loss = clip_loss(image, text, system.logit_scale())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            system.logit_scale.clamp_()
        save(system.eval(), out)
        return out

    def logits(self, system: RSMCLIP, images: Tensor, task: Task) -> Tensor:
        """``[B, classes]``: logit scale × cosine of each image with each class's prompt."""
        prompts = [p for class_prompts in task.prompts for p in class_prompts]
        text = F.normalize(system.encode_text(prompts), dim=-1)
        text = F.normalize(text.reshape(len(task.classes), -1, text.shape[-1]).mean(1), dim=-1)
        image = F.normalize(system.encode_image(images), dim=-1)
        return system.logit_scale() * image @ text.T

    def features(self, system: RSMCLIP, images: Tensor) -> Tensor:
        return F.normalize(system.encode_image(images), dim=-1)


class Medical:
    """The demo medical sample: 600 synthetic DICOM cases (480 training, 120 held out)."""

    name = "medical"
    # Every attention layer of both towers and of the fusion; the ITM head trains beside them.
    lora = {"r": 2, "alpha": 4, "target_modules": [MEDICAL_TOWERS], "trainable": [r"itm_head\..*"]}
    lora_lr, full_lr = 5e-3, 1e-4
    adapt_task = ("chest", "brain", "abdomen")
    merge_tasks = {"organ": ("chest", "brain", "abdomen"), "modality": ("CT", "DX")}
    modality_names = {"CT": "CT scan", "DX": "radiograph"}

    def __init__(self, sample: Path) -> None:
        if not (sample / "manifest.json").is_file():
            write_medical_sample(sample, "demo")
        init_args = yaml.safe_load(MEDICAL_CONFIG.read_text())["model"]["init_args"]
        optimiser = ("lr", "betas", "weight_decay", "warmup", "decay")
        self.init_args = {k: v for k, v in init_args.items() if k not in optimiser}
        cases = {c["id"]: c for c in json.loads((sample / "manifest.json").read_text())["cases"]}
        load = self.new_system().image_loader()
        train, test = read_cases(sample, "train"), read_cases(sample, "test")
        ordered = train + test
        self.images = torch.stack([load(case.image) for case in ordered])
        self.captions = [case.caption for case in train]
        self.attributes = {
            key: [cases[case.id][key] for case in ordered] for key in ("organ", "modality")
        }
        self.pools = {"train": range(len(train)), "eval": range(len(train), len(ordered))}

    def task(self, name: str, classes: tuple[str, ...]) -> Task:
        if name == "modality":
            words = [self.modality_names[c] for c in classes]
            prompts = tuple((f"{w}.", f"a {w} image.") for w in words)
            return Task(name, "modality", classes, prompts)
        prompts = tuple(tuple(t.format(c) for t in medical_templates()) for c in classes)
        return Task(name, "organ", classes, prompts)

    def new_system(self, peft: dict | None = None, seed: int = 0) -> M3AEPretrainSystem:
        torch.manual_seed(seed)
        system = M3AEPretrainSystem(**self.init_args, peft=peft)
        system.configure_model()
        return system

    def pretrain(self, excluded: set[str], steps: int, seed: int, out: Path) -> Path:
        """The tiny config's losses on the training split's captions (batch 32, constant lr)."""
        del excluded  # the tasks are held out by split: test images are never pretrained on
        system = self.new_system(seed=seed).train()
        optimizer = torch.optim.AdamW(
            system.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.01
        )
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            batch = torch.randperm(len(self.captions), generator=generator)[:32].tolist()
            images = self.images[batch]
            losses = system.compute_losses(
                {"image": images, "text": [self.captions[i] for i in batch]}, "train"
            )
            optimizer.zero_grad()
            losses["loss"].backward()
            optimizer.step()
        save(system.eval(), out)
        return out

    def logits(self, system: M3AEPretrainSystem, images: Tensor, task: Task) -> Tensor:
        """``[B, classes]``: ITM log-odds of every image with every prompt, averaged per class
        (``itm_scores`` with gradients; towers run once per image and once per prompt)."""
        prompts = [p for class_prompts in task.prompts for p in class_prompts]
        rows = []
        for start in range(0, len(images), 32):
            chunk = images[start : start + 32]
            backbone = system.backbone
            image, _, _ = backbone.encode_image(chunk)
            text, padding = backbone.encode_text(system.tokenize(prompts))
            n, t = len(chunk), len(prompts)
            fused_image, fused_text, _ = backbone.fuse(
                image.repeat_interleave(t, 0), text.repeat(n, 1, 1), padding.repeat(n, 1)
            )
            out = system.itm_head(backbone.pool(fused_image, fused_text))
            rows.append((out[:, 1] - out[:, 0]).reshape(n, len(task.classes), -1).mean(2))
        return torch.cat(rows)

    def features(self, system: M3AEPretrainSystem, images: Tensor) -> Tensor:
        """The pooled image tower output (the retrieval embedding), L2-normalised."""
        return F.normalize(system.encode_image(images), dim=-1)


DOMAINS = {"remote_sensing": RemoteSensing, "medical": Medical}


PRETRAIN_STEPS = {"remote_sensing": 100, "medical": 150}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options adapt.py and merge.py share: domains, seeds, shots, steps, samples."""
    parser.add_argument("--domains", default="remote_sensing,medical")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--shots", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--pretrain-steps", type=int, help="base pretraining steps (per domain)")
    parser.add_argument("--samples", type=Path, help="folder of the demo samples (kept there)")


def run_domains(
    args: argparse.Namespace,
    run_seed: Callable[..., dict],
    summarise: Callable[[str, list[dict]], list[dict]],
) -> int:
    """Each domain over the seeds: one JSON line per method and seed, the summary lines, and the
    domain's CPU and wall time with the load average before and after (the machine is shared)."""
    torch.set_num_threads(1)
    args.pretrain_steps = {
        name: args.pretrain_steps or steps for name, steps in PRETRAIN_STEPS.items()
    }
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        samples = args.samples or work
        for name in args.domains.split(","):
            cpu, wall, load = time.process_time(), time.perf_counter(), os.getloadavg()[0]
            domain = DOMAINS[name](samples / name)
            runs = []
            for seed in seeds:
                runs.append(run_seed(domain, args, seed, work))
                for method, row in runs[-1].items():
                    print(json.dumps({"domain": name, "method": method, "seed": seed, **row}))
            for line in summarise(name, runs):
                print(json.dumps(line))
            cost = {"domain": name, "cpu_s": time.process_time() - cpu}
            cost |= {"wall_s": time.perf_counter() - wall, "pretrain_steps": args.pretrain_steps}
            cost["load_average"] = [load, os.getloadavg()[0]]
            print(json.dumps(cost), flush=True)
    return 0
