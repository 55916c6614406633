"""LightningCLI wiring for ``domainvlm fit|validate|test|predict``.

Three rules on top of Lightning's CLI:

* A run's files go under ``trainer.default_root_dir`` (the run directory): a ``ModelCheckpoint``
  without ``dirpath`` writes to ``<run dir>/checkpoints`` and, when the config names no logger, a
  ``CSVLogger`` writes to ``<run dir>/logs/version_N``. Overriding ``--trainer.default_root_dir``
  moves them all, so two runs of one config never overwrite each other's ``last.ckpt``.
* ``--ckpt_path`` is read with ``weights_only=True`` whatever torch is installed
  (``WeightsOnlyCheckpointIO``); there is no ``--weights_only`` option to turn that off, and
  strategies that bypass the checkpoint I/O with loaders of their own (FSDP, DeepSpeed) may not
  resume.
* ``--config NAME`` that is not a file falls back to the configs shipped inside the package, so
  ``domainvlm fit --config remote_sensing/tiny.yaml`` (or ``configs/remote_sensing/tiny.yaml``) works
  from any directory after ``pip install``.

The arguments reach LightningCLI through ``args=``; ``sys.argv`` stays the process's own, because
Lightning's DDP launcher starts the other ranks by re-running ``sys.argv``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainvlm.core.checkpoint import UNREADABLE, WeightsOnlyCheckpointIO, unreadable
from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.system import BaseSystem
from jsonargparse import ArgumentError, Namespace
from lightning.fabric.plugins.io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import Strategy

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
HELP_OPTIONS = ("-h", "--help", "--model.help", "--data.help")
NOT_THE_USERS_BUSINESS = (
    # Lightning's own use of torch's pytree API, raised on every run (lightning 2.6, torch 2.9+)
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
"""Warnings a user can do nothing about: silenced during fit/validate/test/predict."""


class _NoAdvertisement(logging.Filter):
    """Lightning logs a tip to install its cloud logger (litlogger) on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_NoAdvertisement())
# configs/ sits beside core/ in the repository and in the installed package alike.
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class ConfigError(DomainVLMError):
    pass


class DomainVLMCLI(LightningCLI):
    """LightningCLI with run-directory outputs and weights-only checkpoint loading."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Lightning >= 2.6 offers `--weights_only` on every subcommand; ours is always True.
        return {name: skip | {"weights_only"} for name, skip in LightningCLI.subcommands().items()}

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the hyperparameters of --ckpt_path (weights-only) before building the
        # model; a file that fails that is the user's to fix, not a traceback.
        try:
            super()._parse_ckpt_path()
        except UNREADABLE as exc:
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise unreadable(str(path), exc) from None

    def before_instantiate_classes(self) -> None:
        trainer = self._get(self.config, "trainer")
        root = trainer.get("default_root_dir") or os.getcwd()
        trainer["default_root_dir"] = root
        if trainer.get("logger") in (None, True):
            trainer["logger"] = Namespace(
                class_path=CSV_LOGGER, init_args=Namespace(save_dir=root, name="logs")
            )
        callbacks = trainer.get("callbacks") or []
        for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
            is_checkpoint = isinstance(callback, Namespace) and issubclass(
                _import(callback.class_path), ModelCheckpoint
            )
            if is_checkpoint and callback.init_args.get("dirpath") is None:
                callback.init_args["dirpath"] = os.path.join(root, "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except ValueError as exc:  # Lightning's word for an impossible trainer setting
            raise ConfigError(f"invalid trainer setting: {exc}") from None
        strategy = type(trainer.strategy)
        if self._get(self.config, "ckpt_path") and strategy.load_checkpoint is not (
            Strategy.load_checkpoint
        ):
            # FSDP, DeepSpeed and ModelParallel read checkpoints with loaders of their own, some
            # of which unpickle whatever the file holds.
            raise ConfigError(
                f"--ckpt_path with the {strategy.__name__}: it loads checkpoints with its own "
                "loader, not weights-only; domainvlm resumes on one device or with DDP"
            )
        current = trainer.strategy.checkpoint_io
        if type(current) is not TorchCheckpointIO:
            raise ConfigError(
                f"checkpoint I/O plugin {type(current).__name__} is not supported: domainvlm reads "
                "checkpoints with its own weights-only loader (remove the plugin from the config)"
            )
        trainer.strategy.checkpoint_io = WeightsOnlyCheckpointIO()
        return trainer


def run_lightning(argv: Sequence[str]) -> LightningCLI:
    argv = resolve_config_paths(argv)
    if any(arg.partition("=")[0] in HELP_OPTIONS for arg in argv):
        from domainvlm.core.commands.domains import import_domain_classes

        import_domain_classes()  # so help lists every domain's classes and takes short names
    with warnings.catch_warnings():
        # main(argv) may be called from Python (tests, notebooks) whose own sys.argv is unrelated.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        for message in NOT_THE_USERS_BUSINESS:
            warnings.filterwarnings("ignore", message=message)
        try:
            return DomainVLMCLI(
                BaseSystem,
                BaseDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                # Re-running a config in the same run directory must not fail on the config copy.
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False, "default_env": False},
                args=argv,
            )
        except ArgumentError as exc:
            raise ConfigError(explain_config_error(str(exc), argv)) from None
        except MisconfigurationException as exc:
            raise ConfigError(f"invalid trainer setting: {exc}") from None


def packaged_config(name: str) -> Path | None:
    """The config shipped with the package for ``remote_sensing/tiny.yaml`` (or ``configs/...``)."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    if relative.parts[:1] == ("configs",):
        relative = Path(*relative.parts[1:])
    candidate = PACKAGED_CONFIGS / relative
    return candidate if candidate.is_file() else None


def resolve_config_paths(argv: Sequence[str]) -> list[str]:
    """Replace each ``--config``/``-c`` value that is not a file by the packaged config it names."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        prefix = next((p for p in ("--config=", "-c=") if arg.startswith(p)), None)
        if prefix is not None:
            value, index = arg[len(prefix) :], i
        elif arg in ("--config", "-c") and i + 1 < len(resolved):
            prefix, value, index = "", resolved[i + 1], i + 1
        else:
            continue
        if not os.path.exists(value) and (shipped := packaged_config(value)) is not None:
            resolved[index] = f"{prefix}{shipped}"
    return resolved


def _import(class_path: str) -> type:
    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def explain_config_error(message: str, argv: Sequence[str]) -> str:
    """Boil jsonargparse's nested report down to the key at fault and what to do."""
    command = argv[0] if argv else "fit"
    hint = (
        f"Run `domainvlm {command} --config <file> --print_config` to see every valid key with its "
        f"current value, or `domainvlm {command} --help`."
    )
    option = re.search(r"class_path '([\w.]+)':\s+Option '(\w+)' is not accepted", message)
    if option:
        cls, key = option.groups()
        section = "model" if re.search(r'key "model"', message) else "data"
        return (
            f"config key '{section}.init_args.{key}' is not an argument of {cls} (a typo?). {hint}"
        )
    for pattern in (
        r"Key '([\w.]+)' is not expected",
        r"does not accept option '([\w.]+)'",
        r"unrecognized arguments: (\S+)",
    ):
        unexpected = re.search(pattern, message, re.IGNORECASE)
        if unexpected:
            return f"config key '{unexpected.group(1)}' is not recognised (a typo?). {hint}"
    first_lines = " ".join(line.strip() for line in message.splitlines()[:3] if line.strip())
    return f"invalid configuration: {first_lines}. {hint}"
