"""Training-step throughput: a domainvlm system against a plain PyTorch loop, fp32 and bf16, in one run.

Both sides train the same open_clip model on the same batches with the same contrastive loss
(open_clip's ``ClipLoss`` for the plain loop; ``domainvlm.core.losses.clip_loss``, equal to it, in the
system) and AdamW; both tokenise the captions every step. The domainvlm side is a full
``Trainer.fit`` of ``RSMCLIP`` (self-distillation off), so Lightning's hooks, logging and the LR
schedule are counted; its bf16 is ``Trainer(precision="bf16-mixed")``, the plain loop's is
``torch.autocast`` around forward and loss.

The four sides (plain/domainvlm × fp32/bf16) take turns in rounds, each round in a rotated order,
and every ratio is the median of its per-round ratios, so a change of machine load hits all sides
alike. Each side keeps its model and optimizer from round to round (every round passes over the
same batches again), so the plain loop's fp32 and bf16 losses over the same steps, from the same
initial weights, form two loss curves.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from domainvlm.core.datamodule import collate  # noqa: E402
from domainvlm.domains.remote_sensing.system import RSMCLIP  # noqa: E402
from open_clip.loss import ClipLoss  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

SIDES = ("plain_fp32", "plain_bf16", "domainvlm_fp32", "domainvlm_bf16")


class RandomPairs(Dataset):
    def __init__(self, count: int, image_size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(count, 3, image_size, image_size, generator=generator)
        self.texts = [f"a satellite photo of scene number {i}" for i in range(count)]

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "text": self.texts[index]}


class StepTimer(L.Callback):
    """Wall time from the first timed batch's start to the last batch's end."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def make_system(args: argparse.Namespace) -> RSMCLIP:
    torch.manual_seed(0)
    return RSMCLIP(
        model_name=args.model,
        tokenizer=args.tokenizer,
        context_length=args.context_length,
        distill_weight=0.0,
        lr=1e-4,
        warmup=0,
        preprocessing={"image_size": args.image_size},
    )


class PlainLoop:
    """open_clip model + ClipLoss + AdamW; state carries over from round to round."""

    def __init__(self, args: argparse.Namespace, bf16: bool) -> None:
        system = make_system(args)
        self.model, self.tokenizer = system.model, system.tokenizer
        self.model.train()
        self.loss_fn = ClipLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1)
        self.bf16 = bf16
        self.warmup = args.warmup
        self.losses: list[float] = []

    def run(self, loader: DataLoader) -> float:
        """One pass over ``loader``; steps/s after the warm-up steps."""
        start = 0.0
        for step, batch in enumerate(loader):
            if step == self.warmup:
                start = time.perf_counter()
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else nullcontext()
            with autocast:
                image, text, scale = self.model(batch["image"], self.tokenizer(batch["text"]))
                loss = self.loss_fn(image, text, scale.clamp(max=100))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.losses.append(loss.detach().item())
        return (len(loader) - self.warmup) / (time.perf_counter() - start)


class DomainVLMFit:
    """A fresh ``Trainer.fit`` per round on the same system (weights carry over)."""

    def __init__(self, args: argparse.Namespace, bf16: bool) -> None:
        self.system = make_system(args)
        self.precision = "bf16-mixed" if bf16 else "32-true"
        self.warmup = args.warmup

    def run(self, loader: DataLoader) -> float:
        timer = StepTimer(self.warmup)
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=1,
            precision=self.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            limit_val_batches=0,
            callbacks=[timer],
        )
        trainer.fit(self.system, train_dataloaders=loader)
        return (len(loader) - self.warmup) / (timer.end - timer.start)


def median_ratio(rates: dict[str, list[float]], top: str, bottom: str) -> float:
    return round(statistics.median(a / b for a, b in zip(rates[top], rates[bottom])), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model config")
    parser.add_argument("--tokenizer", default="openclip:ViT-B-32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dataset = RandomPairs(args.batch_size * (args.steps + args.warmup), args.image_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate)
    plain_fp32, plain_bf16 = PlainLoop(args, bf16=False), PlainLoop(args, bf16=True)
    runners: dict[str, Callable[[DataLoader], float]] = {
        "plain_fp32": plain_fp32.run,
        "plain_bf16": plain_bf16.run,
        "domainvlm_fp32": DomainVLMFit(args, bf16=False).run,
        "domainvlm_bf16": DomainVLMFit(args, bf16=True).run,
    }
    rates: dict[str, list[float]] = {side: [] for side in SIDES}
    for index in range(args.rounds):
        order = SIDES[index % len(SIDES) :] + SIDES[: index % len(SIDES)]
        for side in order:
            rates[side].append(runners[side](loader))
    fp32_curve, bf16_curve = plain_fp32.losses, plain_bf16.losses
    gaps = [abs(a - b) for a, b in zip(fp32_curve, bf16_curve)]
    print(
        json.dumps(
            {
                "bench": "train_step",
                "ratio": median_ratio(rates, "domainvlm_fp32", "plain_fp32"),
                "ratio_bf16": median_ratio(rates, "domainvlm_bf16", "plain_bf16"),
                "bf16_over_fp32_plain": median_ratio(rates, "plain_bf16", "plain_fp32"),
                "bf16_over_fp32_domainvlm": median_ratio(rates, "domainvlm_bf16", "domainvlm_fp32"),
                "domainvlm_bf16_over_plain_fp32": median_ratio(
                    rates, "domainvlm_bf16", "plain_fp32"
                ),
                "steps_per_s": {side: round(statistics.median(r), 4) for side, r in rates.items()},
                "loss_fp32": [round(v, 4) for v in fp32_curve],
                "loss_bf16": [round(v, 4) for v in bf16_curve],
                "loss_gap_max": round(max(gaps), 4),
                "loss_gap_last": round(gaps[-1], 4),
                "model": args.model,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "timed_steps": args.steps,
                "rounds": args.rounds,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
