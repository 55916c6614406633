"""Domain plugins, discovered through the ``domainvlm.domains`` entry-point group.

Built-in domains register the same way as third-party ones, so core never imports a domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from domainvlm.core.errors import DomainVLMError

ENTRY_POINT_GROUP = "domainvlm.domains"


@dataclass
class ZeroShotData:
    """A labelled held-out split for ``domainvlm eval zeroshot``, in one language."""

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    templates: list[str]


@dataclass
class RetrievalData:
    """Images and captions for ``domainvlm eval retrieval``: caption i describes image_index[i]."""

    paths: list[Path]
    captions: list[str]
    image_index: list[int]
    languages: list[str]


@dataclass(frozen=True)
class DomainPlugin:
    """What a domain tells core about itself (its manifest plus the hooks core calls)."""

    name: str
    description: str
    modalities: tuple[str, ...]
    input_format: str
    channels: str
    data_licence: str
    configs_dir: Path
    write_sample: Callable[..., Path]
    """``write_sample(out_dir, size="small"|"demo", seed=0) -> out_dir``: the offline sample dataset."""
    knowledge_source: Callable[[], list[dict]] | None = None
    """Records with at least a ``text`` field, for ``domainvlm kb build --domain``."""
    knowledge_from_data: Callable[[Path], list[dict]] | None = None
    """``knowledge_from_data(root)``: records read from a dataset root, for domains whose knowledge
    is their data's own texts (radiology reports); ``kb build --domain D --data ROOT``."""
    image_readers: dict[str, Callable[[Path], Any]] = field(default_factory=dict)
    """File suffix (".tif", ".dcm", ...) → reader returning an HWC numpy array."""
    zeroshot_data: Callable[[Path, str, str], ZeroShotData] | None = None
    """``zeroshot_data(root, split, lang)``: labelled images of a dataset root (sample or real)."""
    retrieval_data: Callable[[Path, str], RetrievalData] | None = None
    """``retrieval_data(root, split)``: captioned images of a dataset root."""
    templates: Callable[[str], list[str]] | None = None
    """``templates(lang)``: the domain's zero-shot prompt templates (``{}`` is the class name)."""
    languages: tuple[str, ...] = ("en",)

    def configs(self) -> list[Path]:
        return sorted(self.configs_dir.glob("*.yaml")) if self.configs_dir.is_dir() else []


class UnknownDomainError(DomainVLMError, LookupError):
    pass


@cache
def load_domains() -> dict[str, DomainPlugin]:
    plugins: dict[str, DomainPlugin] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        plugin = entry.load()
        if not isinstance(plugin, DomainPlugin):
            raise TypeError(
                f"entry point {entry.name!r} = {entry.value!r} in group {ENTRY_POINT_GROUP!r} "
                f"must point at a domainvlm.core.registry.DomainPlugin, got {type(plugin).__name__}"
            )
        plugins[plugin.name] = plugin
    return plugins


def get_domain(name: str) -> DomainPlugin:
    domains = load_domains()
    if name not in domains:
        known = ", ".join(sorted(domains)) or "none"
        raise UnknownDomainError(
            f"unknown domain {name!r}. Installed domains: {known}. A domain is installed by a "
            f"package that registers a DomainPlugin under the {ENTRY_POINT_GROUP!r} entry-point "
            "group; run `domainvlm domains` to list them."
        )
    return domains[name]
