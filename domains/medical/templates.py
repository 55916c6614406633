"""Zero-shot prompt templates for radiology images (English: the medical datasets are English).

Caption-style, like the ROCO captions the model is pretrained on, and neutral about the modality
(a CT and a radiograph template each), so that a class name - an organ, a finding - is what
tells the prompts apart.
"""

from __future__ import annotations

from domainvlm.core.zeroshot import TemplateError

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "{}.",
        "an image of the {}.",
        "CT scan of the {}.",
        "radiograph of the {}.",
    ),
}


def templates(lang: str = "en") -> list[str]:
    if lang not in _TEMPLATES:
        raise TemplateError(
            f"no medical templates for language {lang!r}; available: {', '.join(_TEMPLATES)}"
        )
    return list(_TEMPLATES[lang])
