"""Training-step throughput of a domainvlm system over a plain PyTorch loop, in one run.

Both sides train the same open_clip model on the same batches with the same contrastive loss
(open_clip's ``ClipLoss`` for the plain loop; ``domainvlm.core.losses.clip_loss``, equal to it, in the system)
and AdamW; both tokenise the captions every step. The domainvlm side is a full ``Trainer.fit`` of
``RSMCLIP`` (self-distillation off), so Lightning's hooks, logging and the LR schedule are counted.
Prints one JSON line: {"bench": "train_step", "ratio": domainvlm / plain, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from domainvlm.core.datamodule import collate  # noqa: E402
from domainvlm.domains.remote_sensing.system import RSMCLIP  # noqa: E402
from open_clip.loss import ClipLoss  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402


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


def plain_loop(args: argparse.Namespace, loader: DataLoader) -> float:
    system = make_system(args)
    model, tokenizer = system.model, system.tokenizer
    model.train()
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    start = 0.0
    for step, batch in enumerate(loader):
        if step == args.warmup:
            start = time.perf_counter()
        image_features, text_features, logit_scale = model(batch["image"], tokenizer(batch["text"]))
        loss = loss_fn(image_features, text_features, logit_scale.clamp(max=100))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (len(loader) - args.warmup) / (time.perf_counter() - start)


def domainvlm_fit(args: argparse.Namespace, loader: DataLoader) -> float:
    system = make_system(args)
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(system, train_dataloaders=loader)
    return (len(loader) - args.warmup) / (timer.end - timer.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model config")
    parser.add_argument("--tokenizer", default="openclip:ViT-B-32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--context-length", type=int, default=77)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    dataset = RandomPairs(args.batch_size * (args.steps + args.warmup), args.image_size)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=collate)
    plain = plain_loop(args, loader)
    ours = domainvlm_fit(args, loader)
    print(
        json.dumps(
            {
                "bench": "train_step",
                "ratio": round(ours / plain, 4),
                "domainvlm_steps_per_s": round(ours, 4),
                "plain_steps_per_s": round(plain, 4),
                "model": args.model,
                "batch_size": args.batch_size,
                "image_size": args.image_size,
                "timed_steps": args.steps,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
