"""A test-only domain of coloured tiles whose system has a known joint space.

``ColourSystem`` embeds an image as its mean colour and a text as the colours it names, so
zero-shot answers, retrieval rankings and scores can be worked out by hand. ``PLUGIN`` gives the
command tests a domain whose hooks record their calls; the system lives in the same module, so
``eval`` finds the domain from a checkpoint alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.images import read_image, to_rgb_image
from domainvlm.core.registry import DomainPlugin, RetrievalData, VQAData, ZeroShotData
from domainvlm.core.system import BaseSystem
from torch import Tensor, nn

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

hook_calls: list[tuple] = []
"""(hook, root, split[, lang]) per call of a data hook, for tests to check what core asked for."""


class ColourSystem(BaseSystem):
    """An image embeds as its mean colour, a text as the colours it names: a known joint space."""

    def __init__(self, image_size: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_size = image_size
        self.mix = nn.Linear(3, 3, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3))

    def encode_image(self, images: Tensor) -> Tensor:
        return self.mix(images.mean(dim=(2, 3)))

    def encode_text(self, texts: list[str]) -> Tensor:
        named = [[float(name in text.lower()) for name in COLOURS] for text in texts]
        return self.mix(torch.tensor(named) + 1e-3)

    def load_image(self, path: str | Path) -> Tensor:
        image = to_rgb_image(read_image(path), path).resize((self.image_size, self.image_size))
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def encoder(self) -> Encoder:
        return Encoder(
            name="colour",
            image_fn=self.encode_image,
            text_fn=self.encode_text,
            load_image=self.load_image,
            modules=[self],
        )


def tile_colour(path: Path) -> str:
    """Tiles are named ``<colour>_<n>.png``."""
    return path.stem.split("_")[0]


def zeroshot_data(root: Path, split: str, lang: str) -> ZeroShotData:
    hook_calls.append(("zeroshot", Path(root), split, lang))
    paths = sorted((Path(root) / split).glob("*.png"))
    labels = [list(COLOURS).index(tile_colour(p)) for p in paths]
    return ZeroShotData(paths, labels, list(COLOURS), ["a {} tile"])


def retrieval_data(root: Path, split: str) -> RetrievalData:
    hook_calls.append(("retrieval", Path(root), split))
    paths = sorted((Path(root) / split).glob("*.png"))
    captions = [f"a {tile_colour(p)} tile" for p in paths]
    return RetrievalData(paths, captions, list(range(len(paths))), ["en"] * len(paths))


def vqa_data(root: Path, split: str) -> VQAData:
    """Two questions per tile: its colour (type ``colour``) and whether it is red (``yes/no``)."""
    hook_calls.append(("vqa", Path(root), split))
    paths = sorted((Path(root) / split).glob("*.png"))
    colours = [tile_colour(p) for p in paths]
    return VQAData(
        paths=paths + paths,
        questions=["what colour is this tile?"] * len(paths) + ["is this tile red?"] * len(paths),
        answers=colours + ["yes" if colour == "red" else "no" for colour in colours],
        answer_types=["colour"] * len(paths) + ["yes/no"] * len(paths),
        majority_answer="no",
    )


def answer_questions(
    system: ColourSystem, paths: list[Path], questions: list[str], batch_size: int
) -> list[str]:
    """The colour the system sees in each tile, or whether it is the one the question names."""
    if not isinstance(system, ColourSystem):
        raise DomainVLMError(f"a {type(system).__name__} does not answer questions about colours")
    answers = []
    for start in range(0, len(paths), batch_size):
        images = torch.stack([system.load_image(p) for p in paths[start : start + batch_size]])
        seen = [list(COLOURS)[i] for i in system.encode_image(images).argmax(dim=1).tolist()]
        for colour, question in zip(seen, questions[start : start + batch_size]):
            named = [name for name in COLOURS if name in question]
            answers.append(("yes" if colour in named else "no") if named else colour)
    return answers


def rank_answers(
    system: ColourSystem, paths: list[Path], questions: list[str], top_k: int, frame: int | None
) -> list[list[tuple[str, float]]]:
    """Colours ranked by a softmax over the tile's mean colour (PNG tiles have no frames)."""
    if frame:
        raise DomainVLMError(f"frame {frame} requested, but PNG tiles have no frames")
    images = torch.stack([system.load_image(p) for p in paths])
    probabilities = system.encode_image(images).softmax(dim=1)
    top = probabilities.topk(min(top_k, len(COLOURS)), dim=1)
    return [
        [(list(COLOURS)[i], p) for i, p in zip(indices, values)]
        for values, indices in zip(top.values.tolist(), top.indices.tolist())
    ]


def knowledge() -> list[dict]:
    return [
        {"text": "red: roofs and brick", "level": "object"},
        {"text": "green: forest and meadow", "level": "scene"},
        {"text": "blue: lakes and sea", "level": "scene"},
    ]


PLUGIN = DomainPlugin(
    name="colours",
    description="coloured tiles (test-only plugin)",
    modalities=("image", "text"),
    input_format="PNG",
    channels="RGB",
    data_licence="synthetic",
    configs_dir=Path(__file__).parent,
    write_sample=lambda out_dir, **kwargs: out_dir,
    knowledge_source=knowledge,
    knowledge_queries=lambda root: [{"text": "something red"}, {"text": "a blue thing"}],
    zeroshot_data=zeroshot_data,
    retrieval_data=retrieval_data,
    vqa_data=vqa_data,
    answer_questions=answer_questions,
    rank_answers=rank_answers,
    languages=("en", "pt"),
)
