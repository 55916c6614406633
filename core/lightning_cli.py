"""LightningCLI wiring for ``domainvlm fit|validate|test|predict``."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

from core.datamodule import BaseDataModule
from core.system import BaseSystem


def run_lightning(argv: Sequence[str]) -> LightningCLI:
    return LightningCLI(
        BaseSystem,
        BaseDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        # Re-running a config in the same run directory must not fail on the saved config copy.
        save_config_kwargs={"overwrite": True},
        args=list(argv),
        parser_kwargs={"description": "domainvlm (LightningCLI)", "default_env": False},
    )
