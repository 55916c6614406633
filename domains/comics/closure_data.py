"""Closure instances: pick the panel, the text or the text order that continues a sequence.

One record type serves COMICS text cloze, visual cloze and character coherence and the five
ComicsPAP tasks, so one scorer and one evaluation loop serve all of them. Images are addresses
(a file, or ``page.jpg#xywh=x,y,w,h``); texts are plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

COMICS_TASKS = ("text_cloze", "visual_cloze", "char_coherence")
COMICSPAP_TASKS = (
    "sequence_filling",
    "char_coherence",
    "visual_closure",
    "text_closure",
    "caption_relevance",
)
OptionKind = Literal["image", "text"]


@dataclass
class ClosureInstance:
    """``options[answer]`` is right. ``context_images``/``context_texts`` are the panels around the
    masked position ``mask_index`` (None: the panel after the last). For text options,
    ``target_image`` is the panel whose text is asked (COMICS shows it with its balloons blanked);
    for image options ``target_text`` is the masked panel's text when the task gives it."""

    task: str
    context_images: list[str]
    options: list[str]
    option_kind: OptionKind
    answer: int
    context_texts: list[str] | None = None
    mask_index: int | None = None
    target_image: str | None = None
    target_text: str | None = None
    id: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.options)
