"""Zero-shot classification through any ``Encoder``: class weights from prompts, then cosine logits.

Class weights follow open_clip / CLIP_benchmark exactly (embed every filled template, L2-normalise,
average over templates, re-normalise; logits = 100 x image·class), so a checkpoint scored here
scores the same in published tables. Encoders with their own ``score_fn`` (an ITM head) are scored
by it instead, averaged over templates, behind the same interface.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.retrieval import ImageInput, embed_texts, iter_image_batches
from torch import Tensor

LOGIT_SCALE = 100.0

Template = str | Callable[[str], str]

DEFAULT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": ("a photo of a {}.", "an image of {}."),
    "pt": ("uma foto de {}.", "uma imagem de {}."),
    "es": ("una foto de {}.", "una imagen de {}."),
    "fr": ("une photo de {}.", "une image de {}."),
    "de": ("ein Foto von {}.", "ein Bild von {}."),
    "nl": ("een foto van {}.", "een afbeelding van {}."),
    "it": ("una foto di {}.", "un'immagine di {}."),
    "zh": ("{}的照片。", "{}的图像。"),
    "ko": ("{}의 사진.", "{}의 이미지."),
    "ru": ("фотография: {}.", "изображение: {}."),
}
"""Generic prompts per language; domains pass their own (``a satellite photo of {}.``)."""


class TemplateError(DomainVLMError, ValueError):
    pass


@dataclass
class Prediction:
    label: str
    probabilities: dict[str, float]
    top_k: list[tuple[str, float]]

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "probability": self.probabilities[self.label],
            "top_k": [{"label": label, "probability": p} for label, p in self.top_k],
        }


def fill(template: Template, classname: str) -> str:
    """``{}`` and ``{c}`` both take the class name; a callable gets it as its argument."""
    if callable(template):
        return template(classname)
    try:
        return template.format(classname, c=classname)
    except (IndexError, KeyError, ValueError) as exc:
        raise TemplateError(
            f"template {template!r} is not a format string with a {{}} or {{c}} placeholder: {exc}"
        ) from exc


def templates_for(lang: str) -> tuple[str, ...]:
    if lang not in DEFAULT_TEMPLATES:
        raise TemplateError(
            f"no built-in templates for language {lang!r}; built in: "
            f"{', '.join(DEFAULT_TEMPLATES)}. Pass your own with a templates file."
        )
    return DEFAULT_TEMPLATES[lang]


def load_templates(path: str | Path, lang: str | None = None) -> list[str]:
    """Templates from a file: a JSON list, a JSON object ``{lang: [...]}``, or one per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read templates file {str(path)!r}: {exc}") from exc
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"templates file {str(path)!r} is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            key = lang or "en"
            if key not in data:
                raise TemplateError(
                    f"templates file {str(path)!r} has no {key!r} entry (has: {', '.join(data)})"
                )
            data = data[key]
        templates = data
    else:
        templates = [line.strip() for line in text.splitlines() if line.strip()]
    if not (
        isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates)
    ):
        raise TemplateError(f"templates file {str(path)!r} must hold a non-empty list of strings")
    try:
        _check_placeholders(templates)
    except TemplateError as exc:
        raise TemplateError(f"templates file {str(path)!r}: {exc}") from exc
    return templates


class ZeroShotClassifier:
    """Class weights are cached by (model identity, class names, templates): prompts cost once."""

    def __init__(self, encoder: Encoder, batch_size: int = 64, cache_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._identity: str | None = None

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.encoder.identity()["sha256"]
        return self._identity

    def class_weights(
        self, classnames: Sequence[str], templates: Sequence[Template] | None = None
    ) -> Tensor:
        """``[classes, dim]`` unit vectors (open_clip returns the transpose)."""
        classnames, templates = _checked(classnames, templates)
        key = (self.identity, classnames, templates)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        texts = [fill(template, name) for name in classnames for template in templates]
        per_template = embed_texts(self.encoder, texts, self.batch_size)
        per_template = per_template.reshape(len(classnames), len(templates), -1)
        weights = torch.nn.functional.normalize(per_template.mean(dim=1), dim=-1)
        with self._lock:
            self._cache[key] = weights
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return weights

    @torch.no_grad()
    def logits(
        self,
        images: ImageInput,
        classnames: Sequence[str],
        templates: Sequence[Template] | None = None,
    ) -> Tensor:
        """``[images, classes]`` scores: 100 x cosine, or the encoder's own ``score_fn``."""
        classnames, templates = _checked(classnames, templates)
        if self.encoder.score_fn is not None:
            return self._scored_logits(images, classnames, templates)
        weights = self.class_weights(classnames, templates)
        rows = [
            LOGIT_SCALE * self.encoder.encode_images(batch) @ weights.T
            for batch in iter_image_batches(self.encoder, images, self.batch_size)
        ]
        return torch.cat(rows).cpu()

    def _scored_logits(
        self, images: ImageInput, classnames: tuple[str, ...], templates: tuple[Template, ...]
    ) -> Tensor:
        texts = [fill(template, name) for name in classnames for template in templates]
        rows = []
        for batch in iter_image_batches(self.encoder, images, self.batch_size):
            scores = self.encoder.score(batch, texts)
            rows.append(scores.reshape(len(batch), len(classnames), len(templates)).mean(dim=2))
        return torch.cat(rows).cpu()

    def predict(
        self,
        images: ImageInput,
        classnames: Sequence[str],
        templates: Sequence[Template] | None = None,
        top_k: int = 5,
    ) -> list[Prediction]:
        classnames = tuple(classnames)
        probabilities = self.logits(images, classnames, templates).softmax(dim=1)
        k = min(top_k, len(classnames))
        predictions = []
        for row in probabilities:
            values, indices = row.topk(k)
            ranked = [(classnames[i], v) for i, v in zip(indices.tolist(), values.tolist())]
            predictions.append(
                Prediction(
                    label=ranked[0][0],
                    probabilities=dict(zip(classnames, row.tolist())),
                    top_k=ranked,
                )
            )
        return predictions


def _checked(
    classnames: Sequence[str], templates: Sequence[Template] | None
) -> tuple[tuple[str, ...], tuple[Template, ...]]:
    classnames = tuple(classnames)
    templates = tuple(templates) if templates is not None else DEFAULT_TEMPLATES["en"]
    if not classnames:
        raise TemplateError("no class names given")
    duplicates = sorted(name for name, count in Counter(classnames).items() if count > 1)
    if duplicates:
        raise TemplateError(f"class names must be distinct; repeated: {', '.join(duplicates)}")
    if not templates:
        raise TemplateError("no templates given")
    _check_placeholders(templates)
    return classnames, templates


def _check_placeholders(templates: Sequence[Template]) -> None:
    """A string template without a placeholder would give every class the same prompt."""
    for template in templates:
        if isinstance(template, str) and fill(template, "\0") == template:
            raise TemplateError(f"template {template!r} has no {{}} or {{c}} placeholder")
