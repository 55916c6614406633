"""LightningCLI wiring for ``domainvlm fit|validate|test|predict``."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from unittest import mock

from domainvlm.core.datamodule import BaseDataModule
from domainvlm.core.errors import DomainVLMError
from domainvlm.core.system import BaseSystem
from jsonargparse import ArgumentError
from lightning.pytorch.cli import LightningCLI


class ConfigError(DomainVLMError):
    pass


def run_lightning(argv: Sequence[str]) -> LightningCLI:
    # LightningCLI reads sys.argv itself; handing it ours avoids its "args and argv" warning.
    with mock.patch.object(sys, "argv", ["domainvlm", *argv]):
        try:
            return LightningCLI(
                BaseSystem,
                BaseDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                # Re-running a config in the same run directory must not fail on the config copy.
                save_config_kwargs={"overwrite": True},
                parser_kwargs={"exit_on_error": False, "default_env": False},
            )
        except ArgumentError as exc:
            raise ConfigError(explain_config_error(str(exc), argv)) from None


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
