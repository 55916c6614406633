"""Zero-shot prompt templates for overhead imagery, one list per supported language.

A class name is inserted in its citation form (the localized names of ``concepts.json``: no
article, nominative case). Languages whose grammar would then need an article, an elision or a
case ending (French ``d'``, German and Russian cases) use caption-style templates in which the bare
name still reads correctly, e.g. ``"{} auf einem Satellitenbild."`` rather than
``"ein Satellitenbild von {}."``.
"""

from __future__ import annotations

from types import MappingProxyType

from domainvlm.domains.remote_sensing.knowledge import LANGUAGES

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "en": (
        "a satellite photo of {}.",
        "a satellite image of {}.",
        "an aerial photo of {}.",
        "an aerial image of {}.",
        "a remote sensing image of {}.",
    ),
    "pt": (
        "uma foto de satélite de {}.",
        "uma imagem de satélite de {}.",
        "uma foto aérea de {}.",
        "uma imagem aérea de {}.",
        "uma imagem de sensoriamento remoto de {}.",
    ),
    "es": (
        "una foto satelital de {}.",
        "una imagen de satélite de {}.",
        "una foto aérea de {}.",
        "una imagen aérea de {}.",
        "una imagen de teledetección de {}.",
    ),
    "fr": (
        "photo satellite : {}.",
        "{} sur une image satellite.",
        "{} sur une photo aérienne.",
        "{}, vue aérienne.",
        "image de télédétection : {}.",
    ),
    "de": (
        "{} auf einem Satellitenfoto.",
        "{} auf einem Satellitenbild.",
        "{} auf einem Luftbild.",
        "Luftaufnahme: {}.",
        "Fernerkundungsbild: {}.",
    ),
    "nl": (
        "een satellietfoto van {}.",
        "een luchtfoto van {}.",
        "{} op een satellietbeeld.",
        "{} op een luchtopname.",
        "remote-sensingbeeld: {}.",
    ),
    "it": (
        "una foto satellitare di {}.",
        "un'immagine satellitare di {}.",
        "una foto aerea di {}.",
        "un'immagine aerea di {}.",
        "un'immagine telerilevata di {}.",
    ),
    "zh": (
        "一张{}的卫星照片。",
        "一幅{}的卫星图像。",
        "一张{}的航拍照片。",
        "一幅{}的航空影像。",
        "一幅{}的遥感图像。",
    ),
    "ko": (
        "{}의 위성 사진.",
        "{}의 위성 이미지.",
        "{}의 항공 사진.",
        "{}의 항공 이미지.",
        "{}의 원격 탐사 영상.",
    ),
    "ru": (
        "спутниковый снимок: {}.",
        "{} на спутниковом снимке.",
        "аэрофотоснимок: {}.",
        "{} на аэрофотоснимке.",
        "снимок дистанционного зондирования: {}.",
    ),
}

TEMPLATES = MappingProxyType(_TEMPLATES)


def templates(lang: str) -> list[str]:
    """The prompt templates for ``lang``, each with one ``{}`` for the class name."""
    if lang not in TEMPLATES:
        raise KeyError(
            f"no prompt templates for language {lang!r}; supported: {', '.join(LANGUAGES)}"
        )
    return list(TEMPLATES[lang])
