"""Domain plugins, discovered through the ``domainvlm.domains`` entry-point group.

Built-in domains register the same way as third-party ones, so core never imports a domain.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from domainvlm.core.errors import DomainVLMError

ENTRY_POINT_GROUP = "domainvlm.domains"


@dataclass(frozen=True)
class Lazy:
    """A hook named ``"package.module:attribute"``, imported on first use.

    Listing domains and building ``domainvlm eval --help`` load every plugin; hooks given this way
    keep that from importing the domains' frameworks (torch, Lightning, rasterio, pydicom), which
    only the command that calls a hook needs."""

    target: str

    def resolve(self) -> Any:
        module, _, attribute = self.target.partition(":")
        try:
            return getattr(import_module(module), attribute)
        except (ImportError, AttributeError) as exc:
            raise DomainVLMError(f"domain hook {self.target!r} cannot be loaded: {exc}") from exc

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


def lazy(target: str) -> Lazy:
    """``lazy("package.module:function")``: a hook that imports its module when first called."""
    if ":" not in target:
        raise ValueError(f"lazy hook {target!r} must read 'package.module:attribute'")
    return Lazy(target)


def resolve_hook(hook: Any) -> Any:
    """The object a ``Lazy`` hook names (imported now), or the hook itself; for callers that
    inspect a hook (``isinstance(reader, SizedReader)``) rather than call it."""
    return hook.resolve() if isinstance(hook, Lazy) else hook


@dataclass
class ZeroShotData:
    """A labelled held-out split for ``domainvlm eval zeroshot``, in one language."""

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    templates: list[str]
    groups: list[str] | None = None
    """Group of each sample (a surgical video): accuracy and macro-F1 are then also computed per
    group and averaged over groups, as video protocols require."""
    protocol: str | None = None
    """How the set is read and scored, named in the output (published protocols differ)."""


@dataclass
class RetrievalData:
    """Images and captions for ``domainvlm eval retrieval``: caption i describes image_index[i]."""

    paths: list[Path]
    captions: list[str]
    image_index: list[int]
    languages: list[str]


@dataclass
class VQAData:
    """Questions about images for ``domainvlm eval vqa``: question i asks about paths[i]."""

    paths: list[Path]
    questions: list[str]
    answers: list[str]
    """Reference answers, normalised the way the domain's systems answer (compared as equal)."""
    answer_types: list[str]
    """Each question's type (medical: open or closed); accuracy is reported per type too."""
    majority_answer: str
    """The most frequent training answer: always giving it is the baseline to beat."""


@dataclass(frozen=True)
class DomainEvaluation:
    """A domain's own ``domainvlm eval <name>`` task (e.g. comics closure), beside zeroshot and
    retrieval: core adds the shared options (--checkpoint, --data, --split, --out, --table, ...),
    ``add_arguments(parser)`` adds the task's own, ``run(args)`` returns the JSON result and
    ``format_table(result)`` renders it for --table."""

    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], dict]
    format_table: Callable[[dict], str] | None = None


@dataclass(frozen=True)
class DomainCommand:
    """A domain's own command, run as ``domainvlm <domain> <name>`` (comics: ``domainvlm comics
    predict``), for work no core command covers.

    Nested under the domain's name, so a domain never takes a core command name (``predict`` is
    LightningCLI's) nor another domain's. ``add_arguments(parser)`` is called only when this
    command is run or asked for ``--help``, so its module may import what the options need, but
    nothing heavy (torch) at module level; ``run(args)`` returns the exit status."""

    help: str
    add_arguments: Callable[[Any], None]
    run: Callable[[Any], int]
    description: str = ""
    """Shown by ``domainvlm <domain> <name> --help`` above the options (default: ``help``)."""


@dataclass(frozen=True)
class DomainPlugin:
    """What a domain tells core about itself (its manifest plus the hooks core calls).

    Any hook may be a ``lazy("module:function")`` reference, so that loading the plugin stays
    cheap; ``DomainEvaluation.add_arguments`` is called to build ``eval --help``, so its module
    must import nothing heavy."""

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
    knowledge_queries: Callable[[Path | None], list[dict]] | None = None
    """``knowledge_queries(root or None)``: queries of the kind users search the domain's knowledge
    base with (records holding a ``text``, or an ``image`` path relative to ``root``), none of
    them stored in it; ``kb build --domain`` tunes the index and measures its recall with them."""
    image_readers: dict[str, Callable[[Path], Any]] = field(default_factory=dict)
    """File suffix (".tif", ".dcm", ...) → reader returning an HWC numpy array. A
    ``core.images.SizedReader`` also tells the pixel count from the header, so the pixel cap
    holds before it decodes; a plain reader's array is checked after."""
    zeroshot_data: Callable[[Path, str, str], ZeroShotData] | None = None
    """``zeroshot_data(root, split, lang)``: labelled images of a dataset root (sample or real)."""
    retrieval_data: Callable[[Path, str], RetrievalData] | None = None
    """``retrieval_data(root, split)``: captioned images of a dataset root."""
    templates: Callable[[str], list[str]] | None = None
    """``templates(lang)``: the domain's zero-shot prompt templates (``{}`` is the class name)."""
    vqa_data: Callable[[Path, str], VQAData] | None = None
    """``vqa_data(root, split)``: questions with their answers, for ``domainvlm eval vqa``."""
    answer_questions: Callable[[Any, list[Path], list[str], int], list[str]] | None = None
    """``answer_questions(system, paths, questions, batch_size)``: a trained system's answers,
    normalised as ``VQAData.answers``; a DomainVLMError when the system does not answer."""
    rank_answers: Callable[..., list[list[tuple[str, float]]]] | None = None
    """``rank_answers(system, paths, questions, top_k, frame)``: each question's ``top_k``
    answers, best first, with their probabilities (softmax over the answer vocabulary), for
    ``domainvlm ask`` and ``POST /v1/vqa``; ``frame`` (0-based, ``None`` = the first) picks a
    frame of a multi-frame file, or is refused where the file has none."""
    languages: tuple[str, ...] = ("en",)
    evaluations: dict[str, DomainEvaluation] = field(default_factory=dict)
    """Name → extra ``domainvlm eval`` task of this domain."""
    commands: dict[str, DomainCommand] = field(default_factory=dict)
    """Name → the domain's own command, ``domainvlm <domain> <name>``."""

    def configs(self) -> list[Path]:
        return sorted(self.configs_dir.glob("*.yaml")) if self.configs_dir.is_dir() else []


class UnknownDomainError(DomainVLMError, LookupError):
    pass


def installed_domain_names() -> list[str]:
    """The names the installed plugins register, without importing them (for help texts)."""
    return sorted({entry.name for entry in entry_points(group=ENTRY_POINT_GROUP)})


@dataclass(frozen=True)
class BrokenPlugin:
    """An installed entry point that failed to load (its import raised, or it names no
    ``DomainPlugin``): left out, so one broken third-party package never takes down the other
    domains or ``--help``, but named again whenever its domain is asked for."""

    name: str
    """The entry point's name: the domain the package meant to register."""
    entry_point: str
    """``"name = module:attribute"`` as the package declares it."""
    distribution: str | None
    error: Exception

    def reason(self) -> str:
        """The original exception, on one line."""
        return " ".join(f"{type(self.error).__name__}: {self.error}".split())

    def load_error(self) -> PluginLoadError:
        """The error to raise where this domain is used (chained to the original exception)."""
        package = f" of the package {self.distribution!r}" if self.distribution else ""
        error = PluginLoadError(
            f"domain plugin {self.name!r} (entry point {self.entry_point!r}{package}) failed to "
            f"load: {self.reason()}. Fix or uninstall that package (DOMAINVLM_DEBUG=1 shows the "
            "traceback)."
        )
        error.__cause__, error.__suppress_context__ = self.error, True
        return error


class PluginLoadError(DomainVLMError):
    """A domain was asked for whose plugin failed to load."""


_broken: dict[str, BrokenPlugin] = {}
"""Entry-point name -> the plugin that failed in the last ``load_domains`` run."""


@cache
def load_domains() -> dict[str, DomainPlugin]:
    """The installed plugins that load. Each one that does not is warned about once on stderr
    (entry point and exception, one line), left out, and kept in ``broken_domains()``."""
    plugins: dict[str, DomainPlugin] = {}
    _broken.clear()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = entry.load()
            if not isinstance(plugin, DomainPlugin):
                raise TypeError(
                    f"it must point at a domainvlm.core.registry.DomainPlugin, got "
                    f"{type(plugin).__name__}"
                )
        except Exception as exc:  # any exception of third-party import-time code
            dist = getattr(entry, "dist", None)
            broken = BrokenPlugin(
                entry.name, f"{entry.name} = {entry.value}", dist.name if dist else None, exc
            )
            _broken[entry.name] = broken
            print(
                f"domainvlm: warning: domain plugin {entry.name!r} is left out, its entry point "
                f"{broken.entry_point!r} failed to load: {broken.reason()}",
                file=sys.stderr,
            )
            continue
        plugins[plugin.name] = plugin
    return plugins


def broken_domains() -> dict[str, BrokenPlugin]:
    """Entry-point name -> each installed plugin that failed to load (see ``load_domains``)."""
    load_domains()
    return dict(_broken)


def get_domain(name: str) -> DomainPlugin:
    domains = load_domains()
    if name not in domains and name in _broken:
        raise _broken[name].load_error()
    if name not in domains:
        known = ", ".join(sorted(domains)) or "none"
        raise UnknownDomainError(
            f"unknown domain {name!r}. Installed domains: {known}. A domain is installed by a "
            f"package that registers a DomainPlugin under the {ENTRY_POINT_GROUP!r} entry-point "
            "group; run `domainvlm domains` to list them."
        )
    return domains[name]
