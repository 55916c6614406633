"""Zero-shot prompt templates for comic pages and panels (English).

A comics model learns from dialogue, narration and captions, so besides the usual "a comic panel
of {}" the templates include phrasings that dialogue itself uses ("in the {}"), which tag a
setting, an object or a character for a model that has never seen a caption.
"""

from __future__ import annotations

from domainvlm.core.zeroshot import TemplateError

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "{}.",
        "in the {}.",
        "a comic panel of the {}.",
        "a manga page of the {}.",
    ),
}


def templates(lang: str = "en") -> list[str]:
    if lang not in _TEMPLATES:
        raise TemplateError(
            f"no comics templates for language {lang!r}; available: {', '.join(_TEMPLATES)}"
        )
    return list(_TEMPLATES[lang])
