"""A minimal third-party domain, registered through the entry-point group by the tests only.

It proves a domain can be added without editing core: a dataset of coloured squares with
captions naming the colour, a two-tower system trained with core's contrastive loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.encoder import Encoder
from domainvlm.core.losses import LogitScale, clip_loss
from domainvlm.core.registry import DomainPlugin
from domainvlm.core.system import BaseSystem
from torch import Tensor, nn
from torch.utils.data import Dataset

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def write_sample(out_dir: Path, size: str = "small", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    out_dir = Path(out_dir)
    for split, count in (("train", 24), ("val", 6), ("test", 6)):
        rows = []
        for i in range(count):
            name = list(COLOURS)[i % len(COLOURS)]
            image = np.asarray(COLOURS[name], dtype=np.float32)[None, None] + rng.normal(
                0, 0.1, (8, 8, 3)
            ).astype(np.float32)
            path = out_dir / split / f"{i}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path, image)
            rows.append({"file": f"{split}/{i}.npy", "caption": f"a {name} square"})
        (out_dir / f"{split}.json").write_text(json.dumps(rows))
    return out_dir


class ToyDataset(Dataset):
    def __init__(self, root: Path, split: str) -> None:
        self.root = root
        self.rows = json.loads((root / f"{split}.json").read_text())

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        image = torch.from_numpy(np.load(self.root / row["file"])).permute(2, 0, 1)
        return {"image": image, "text": row["caption"]}


class ToyDataModule(BaseDataModule):
    domain = "toy"

    def build_dataset(self, split: str) -> Dataset:
        return ToyDataset(self.root, split)

    def preprocessing(self) -> dict:
        return {"image_size": 8, "mean": [0.0] * 3, "std": [1.0] * 3}


def byte_ids(texts: list[str], length: int = 16) -> Tensor:
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        data = list(text.encode())[:length]
        ids[row, : len(data)] = torch.tensor(data) + 1
    return ids


class ToySystem(BaseSystem):
    def __init__(self, dim: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_tower = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, dim))
        self.text_tower = nn.EmbeddingBag(257, dim)
        self.logit_scale = LogitScale()

    def encode_image(self, images: Tensor) -> Tensor:
        return nn.functional.normalize(self.image_tower(images), dim=-1)

    def encode_text(self, texts: list[str]) -> Tensor:
        return nn.functional.normalize(self.text_tower(byte_ids(texts)), dim=-1)

    def compute_losses(self, batch: dict, stage: str) -> dict[str, Tensor]:
        loss = clip_loss(
            self.encode_image(batch["image"]), self.encode_text(batch["text"]), self.logit_scale()
        )
        return {"loss": loss, "clip": loss}

    def encoder(self) -> Encoder:
        return Encoder(
            name="toy",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=lambda path: torch.from_numpy(np.load(path)).permute(2, 0, 1),
            modules=[self],
        )


PLUGIN = DomainPlugin(
    name="toy",
    description="coloured squares (test-only plugin)",
    modalities=("image", "text"),
    input_format="npy arrays + JSON captions",
    channels="RGB",
    data_licence="synthetic",
    configs_dir=Path(__file__).parent,
    write_sample=write_sample,
)
