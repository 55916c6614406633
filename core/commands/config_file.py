"""``--config FILE`` for argparse commands, parsed by jsonargparse as ``fit`` configs are.

The options a command declares with argparse are declared again to a jsonargparse parser, so a
command's YAML config goes through the same loader as LightningCLI's (``1e-3`` is a float, not a
string), and a wrong type, a value outside the choices or an unknown key is refused with the
file's name before anything runs. Options read from the file land in the namespace as if given on
the command line at that point: flags after ``--config`` win, flags before it lose.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_TYPES = (int, float, str, Path)
"""Option types jsonargparse checks itself; other converters run on the string afterwards."""


class LoadConfig(argparse.Action):
    """``--config FILE``: the command's own options from a YAML mapping."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        from jsonargparse import ArgumentError

        actions = config_actions(parser)
        try:
            options = config_parser(parser.prog, actions).parse_path(value, defaults=False)
        except ArgumentError as exc:
            message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            unknown = re.search(r"Option '([^']*)' is not accepted", message)
            if unknown:
                message = (
                    f"unknown option {unknown.group(1)!r}; the options are "
                    f"{', '.join(sorted(actions))}"
                )
            parser.error(f"config {str(value)!r}: {message}")
        for key, option in options.as_dict().items():
            setattr(namespace, key, convert(parser, value, actions[key], option))


def config_actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options a config may set: every ``--flag`` but help and the config itself."""
    return {
        action.dest: action
        for action in parser._actions
        if action.option_strings
        and action.dest not in ("help", "config")
        and not isinstance(action, argparse._HelpAction)
    }


def config_parser(prog: str, actions: dict[str, argparse.Action]) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog=f"{prog} --config", exit_on_error=False, default_env=False)
    for dest, action in actions.items():
        kwargs: dict[str, Any] = {"type": _value_type(action)}
        if action.choices is not None:
            kwargs["choices"] = list(action.choices)
        parser.add_argument(f"--{dest}", **kwargs)
    return parser


def convert(
    parser: argparse.ArgumentParser, path: str, action: argparse.Action, option: Any
) -> Any:
    """Run an option's own converter (``--bands 3,2,1``) on a string from the file."""
    converter: Callable[[str], Any] | None = action.type  # type: ignore[assignment]
    if converter is None or converter in CONFIG_TYPES or option is None:
        return option
    try:
        return [converter(o) for o in option] if isinstance(option, list) else converter(option)
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        parser.error(f"config {str(path)!r}: {action.dest}: {exc}")


def _value_type(action: argparse.Action) -> Any:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return bool
    base = action.type if action.type in CONFIG_TYPES else str
    many = action.nargs in ("+", "*") or isinstance(action, argparse._AppendAction)
    return list[base] if many else base  # type: ignore[valid-type]
