"""The published zero-shot prompts (SurgVLP / HecVL / PeskaVLP): one first-person sentence per class.

Zero-shot phase recognition in these papers embeds one narration-style prompt per phase rather than
a template filled with the class name; ``ClassPrompts`` is that mapping as a template callable, so
core's classifier (``fill(template, classname)``) uses exactly these sentences. Names it does not
know get ``"In {name} phase"``.
"""

from __future__ import annotations

from collections.abc import Mapping

from domainvlm.domains.surgical.phases import AUTOLAPARO_PHASES, CHOLEC80_PHASES, CHOLEC80_TOOLS

CHOLEC80_PROMPTS = dict(
    zip(
        CHOLEC80_PHASES,
        (
            "In preparation phase I insert trocars to patient abdomen cavity",
            "In calot triangle dissection phase I use grasper to hold gallbladder and use hook to "
            "expose the hepatic triangle area and cystic duct and cystic artery",
            "In clip and cut phase I use clipper to clip the cystic duct and artery then use "
            "scissor to cut them",
            "In dissection phase I use the hook to dissect the connective tissue between "
            "gallbladder and liver",
            "In packaging phase I put the gallbladder into the specimen bag",
            "In clean and coagulation phase I use suction and irrigation to clear the surgical "
            "field and coagulate bleeding vessels",
            "In retraction phase I grasp the specimen bag and remove it from trocar",
        ),
        strict=True,
    )
)
AUTOLAPARO_PROMPTS = dict(
    zip(
        AUTOLAPARO_PHASES,
        (
            "I use grasper to grasp and explore the field",
            "I divide ligament and peritoneum",
            "I divide uterine vessels and ligament",
            "I use the dissecting hook to transect the vagina",
            "I remove the specimen bag and uterus",
            "I am suture the tissue",
            "Washing",
        ),
        strict=True,
    )
)
TOOL_PROMPTS = {
    "Grasper": "I use grasper to hold the gallbladder",
    "Bipolar": "I use bipolar to coagulate bleeding vessels",
    "Hook": "I use hook to dissect the tissue",
    "Scissors": "I use scissor to cut the cystic duct",
    "Clipper": "I use clipper to clip the cystic duct and artery",
    "Irrigator": "I use suction and irrigation to clear the surgical field",
    "SpecimenBag": "I put the gallbladder into the specimen bag",
}
"""One prompt per Cholec80 tool, in the first-person narration style of the phase prompts."""
assert tuple(TOOL_PROMPTS) == CHOLEC80_TOOLS


class ClassPrompts:
    """A template callable: class name → its published prompt (hashable, so prompt caches work)."""

    def __init__(self, prompts: Mapping[str, str]) -> None:
        self.prompts = dict(prompts)
        self._lookup = {_key(name): prompt for name, prompt in self.prompts.items()}

    def __call__(self, classname: str) -> str:
        return self._lookup.get(_key(classname), f"In {classname} phase")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClassPrompts) and other.prompts == self.prompts

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.prompts.items())))

    def __repr__(self) -> str:
        return f"ClassPrompts({len(self.prompts)} classes)"


def _key(name: str) -> str:
    return "".join(name.lower().split()).replace("_", "")


ALL_PROMPTS = {**AUTOLAPARO_PROMPTS, **TOOL_PROMPTS, **CHOLEC80_PROMPTS}


def templates(lang: str = "en") -> list[ClassPrompts]:
    """The domain's templates for ``domainvlm zeroshot``: Cholec80, AutoLaparo and tool prompts."""
    if lang != "en":
        raise ValueError(f"surgical prompts are English only, got {lang!r}")
    return [ClassPrompts(ALL_PROMPTS)]
