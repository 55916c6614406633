"""The base LightningModule every domain system extends.

A system wires plain ``nn.Module`` models to losses and an optimiser; models stay framework-free.
Subclasses implement ``compute_losses`` (and ``encoder`` if they have a joint image-text space).
Init arguments must be plain values (str, numbers, lists, dicts) so that ``save_hyperparameters``
alone lets ``domainvlm.core.checkpoint.load_system`` rebuild the model and its preprocessing from a
checkpoint loaded with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import lightning as L
import torch
from domainvlm.core.encoder import Encoder
from domainvlm.core.losses import LogitScale
from domainvlm.core.schedule import Decay, warmup_then_decay
from torch import Tensor, nn

CHECKPOINT_KEY = "domainvlm"
CHECKPOINT_FORMAT = 1

# Parameters named like these get no weight decay, whatever their shape.
NO_DECAY_NAMES = ("bias", "norm", "logit_scale", "log_scale", "positional_embedding", "pos_embed")


class BaseSystem(L.LightningModule):
    """Parameter groups, warmup + decay schedule, per-term loss logging, rebuildable checkpoints."""

    def __init__(
        self,
        lr: float = 5e-4,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup: float = 0.1,
        decay: Decay = "cosine",
        min_lr_ratio: float = 0.0,
        lr_multipliers: dict[str, float] | None = None,
        preprocessing: dict | None = None,
        peft: dict | None = None,
    ) -> None:
        """
        Args:
            lr: peak learning rate.
            weight_decay: AdamW decay for weight matrices (none on biases, norms, logit scale).
            betas: AdamW betas.
            warmup: warmup length: a fraction of all steps if < 1, else a number of steps.
            decay: ``cosine``, ``linear`` or ``constant`` after warmup.
            min_lr_ratio: final learning rate as a fraction of ``lr``.
            lr_multipliers: parameter-name prefix → LR multiplier (e.g. ``{"vqa_head": 10}``).
            preprocessing: image size, mean/std, bands, ...; filled from the DataModule at fit.
            peft: adapters (LoRA, ...) and the base checkpoint they train on (``core.adapters``).
        """
        super().__init__()
        # Collects the init arguments of the whole subclass chain, not only these.
        self.save_hyperparameters()
        self.preprocessing = dict(preprocessing or {})

    # -- what subclasses provide -------------------------------------------------------------
    def compute_losses(self, batch: Any, stage: str) -> dict[str, Tensor]:
        """Return every loss term by name; ``loss`` is the total that is optimised."""
        raise NotImplementedError

    def encoder(self) -> Encoder:
        """The system's image/text embedding, for zero-shot, retrieval and knowledge bases."""
        raise NotImplementedError(f"{type(self).__name__} has no joint image-text embedding")

    # -- training loop ---------------------------------------------------------------------
    def configure_model(self) -> None:
        """Injects the ``peft`` block's adapters once the subclass has built its towers."""
        if self.hparams.get("peft") is not None:
            from domainvlm.core.adapters import apply_peft

            apply_peft(self)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(datamodule, "preprocessing"):
            self.preprocessing = datamodule.preprocessing()
            self.hparams["preprocessing"] = self.preprocessing

    def on_train_epoch_start(self) -> None:
        # Datasets that draw (a caption, a clip window) per epoch need the epoch: Lightning only
        # tells samplers, and persistent workers never see this process's attributes.
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "datasets", {}).get("train")
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def _step(self, batch: Any, stage: str) -> Tensor:
        losses = self.compute_losses(batch, stage)
        batch_size = _batch_size(batch)
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value.detach(),
                prog_bar=name == "loss",
                batch_size=batch_size,
                sync_dist=stage != "train",
            )
        return losses["loss"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # -- optimisation ------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """AdamW groups: decay vs no decay, times each LR multiplier."""
        multipliers = self.hparams.get("lr_multipliers") or {}
        groups: dict[tuple[bool, float], list[nn.Parameter]] = {}
        for name, param in self._trainable_parameters():
            decay = param.ndim >= 2 and not any(key in name for key in NO_DECAY_NAMES)
            scale = next((m for prefix, m in multipliers.items() if name.startswith(prefix)), 1.0)
            groups.setdefault((decay, scale), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": self.hparams.weight_decay if decay else 0.0,
                "lr": self.hparams.lr * scale,
            }
            for (decay, scale), params in groups.items()
        ]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Runs once per optimiser step, not per micro-batch (``accumulate_grad_batches`` k gives
        one call per k batches); ``self.global_step`` is then the index of the step just taken.

        Clamps every ``LogitScale`` in place, as open_clip does, so the scale stays trainable at
        its cap. Subclasses extend it for work tied to weight updates, such as EMA teachers.
        """
        for module in self.modules():
            if isinstance(module, LogitScale):
                module.clamp_()

    def _trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((n, p) for n, p in self.named_parameters() if p.requires_grad)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(
            self.parameter_groups(), lr=self.hparams.lr, betas=tuple(self.hparams.betas)
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = self.hparams.warmup
        warmup_steps = int(warmup * total) if warmup < 1 else int(warmup)
        schedule = partial(
            warmup_then_decay,
            total_steps=total,
            warmup_steps=warmup_steps,
            decay=self.hparams.decay,
            min_ratio=self.hparams.min_lr_ratio,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- checkpoints -------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        cls = type(self)
        checkpoint[CHECKPOINT_KEY] = {
            "format": CHECKPOINT_FORMAT,
            "class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": _plain(dict(self.hparams)),
        }
        if self.hparams.get("peft") is not None:
            from domainvlm.core.adapters import on_save

            on_save(self, checkpoint, checkpoint[CHECKPOINT_KEY])

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resuming from an adapter-only checkpoint: the base weights come from peft.base.
        if self.hparams.get("peft") is not None:
            from domainvlm.core.adapters import complete_state

            info, state = checkpoint.get(CHECKPOINT_KEY, {}), checkpoint["state_dict"]
            checkpoint["state_dict"] = complete_state(self, info, state, "resumed checkpoint")


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, Tensor) and value.ndim > 0:
                return int(value.shape[0])
            if isinstance(value, list) and value:
                return len(value) if not isinstance(value[0], Tensor) else int(value[0].shape[0])
    return None


def _plain(value: Any) -> Any:
    """Hyperparameters as JSON-like values so ``weights_only=True`` can load them."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if not str(k).startswith("_")}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise TypeError(
        f"hyperparameter value {value!r} of type {type(value).__name__} cannot be stored in a "
        "weights-only checkpoint; system init arguments must be plain values"
    )
