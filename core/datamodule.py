"""The base LightningDataModule: per-split datasets, loaders and a collate that fits every domain.

Every domain's DataModule takes its dataset location as ``root`` (``--data.root`` on the CLI), builds
one dataset per split in ``build_dataset`` and reports its preprocessing so checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
from domainvlm.core.errors import DataRootError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

STAGE_SPLITS = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": ("test",),
}


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors and numbers; keep strings and metadata as lists; multi-view lists per view.

    One collate serves images, multi-crop views (a list of tensors per item), video clips
    (``[T, C, H, W]``) and text (strings are tokenised by the model, which owns its tokenizer).
    """
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool | int | float) and not isinstance(first, str):
            batch[key] = torch.tensor(values)
        elif isinstance(first, list | tuple) and first and isinstance(first[0], Tensor):
            batch[key] = [torch.stack(view) for view in zip(*values, strict=True)]
        else:
            batch[key] = values
    return batch


class BaseDataModule(L.LightningDataModule):
    #: Domain name used in error messages (``domainvlm sample-data <domain>``).
    domain: ClassVar[str] = ""
    #: What real dataset(s) ``root`` may point at, for error messages.
    dataset_hint: ClassVar[str] = "the dataset"
    #: How items become a batch (a plain function, so loader workers can pickle it).
    collate_fn: ClassVar[Callable[[list], Any]] = staticmethod(collate)

    def __init__(
        self,
        root: str = "data",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
    ) -> None:
        """
        Args:
            root: dataset directory (sample data or your copy of the real dataset).
            batch_size: training batch size per device.
            eval_batch_size: validation/test batch size (default: ``batch_size``).
            num_workers: data-loading worker processes.
            pin_memory: pin host memory (useful with GPUs).
            seed: seed for dataset splits and caption sampling.
        """
        super().__init__()
        self.root = Path(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    # -- what subclasses provide -------------------------------------------------------------
    def build_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def preprocessing(self) -> dict:
        """Image size, mean/std, bands, ...: saved in checkpoints to rebuild inference transforms."""
        return {}

    # -- shared machinery --------------------------------------------------------------------
    def check_root(self) -> None:
        if not self.root.is_dir():
            hint = (
                f"write the offline sample with `domainvlm sample-data {self.domain} --out {self.root}`"
                if self.domain
                else "create it"
            )
            raise DataRootError(
                f"data.root {str(self.root)!r} does not exist. Either {hint}, or point "
                f"--data.root at your copy of {self.dataset_hint}."
            )

    def setup(self, stage: str) -> None:
        self.check_root()
        for split in STAGE_SPLITS.get(stage, ()):
            if split not in self.datasets:
                self.datasets[split] = self.build_dataset(split)

    def dataset(self, split: str) -> Dataset:
        if split not in self.datasets:
            self.check_root()
            self.datasets[split] = self.build_dataset(split)
        return self.datasets[split]

    def loader(self, split: str, shuffle: bool = False) -> DataLoader:
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=self.collate_fn,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test")
