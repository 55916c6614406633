"""A domain's own commands (``DomainPlugin.commands``) run as ``domainvlm <domain> <command>``: core
lists and runs them without knowing the domain, builds only the options of the command asked
for, and never lets a domain shadow a core command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from domainvlm.core.registry import DomainCommand

from tests.helpers import command_domain, register_plugin, run_cli

PROBE = """
import sys
from domainvlm.core.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "lightning", "faiss", "open_clip", "cv2")
print("RESULT", ",".join(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""

options_built: list[str] = []
"""Command names whose ``add_arguments`` ran, for the tests to check what the CLI built."""


def _hello_arguments(parser: argparse.ArgumentParser) -> None:
    options_built.append("hello")
    parser.add_argument("--name", required=True)
    parser.add_argument("--times", type=int, default=1)


def _hello(args: argparse.Namespace) -> int:
    print(" ".join([f"hello {args.name}"] * args.times))
    return 3 if args.name == "nobody" else 0


def _count_arguments(parser: argparse.ArgumentParser) -> None:
    options_built.append("count")
    parser.add_argument("n", type=int)


def _count(args: argparse.Namespace) -> int:
    print(list(range(args.n)))
    return 0


GREETER = command_domain(
    "greeter",
    {
        "hello": DomainCommand("say hello", _hello_arguments, _hello),
        "count": DomainCommand("count up", _count_arguments, _count, description="Counts to N."),
    },
)
SILENT = command_domain("silent", {})
SHADOW = command_domain("kb", {"hello": DomainCommand("never reachable", _hello_arguments, _hello)})


@pytest.fixture
def greeter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from domainvlm.core.registry import load_domains

    options_built.clear()
    register_plugin(tmp_path / "g", monkeypatch, "greeter", f"{__name__}:GREETER")
    register_plugin(tmp_path / "s", monkeypatch, "silent", f"{__name__}:SILENT")
    register_plugin(tmp_path / "k", monkeypatch, "kb", f"{__name__}:SHADOW")
    yield
    load_domains.cache_clear()


def test_a_domain_command_runs_with_its_options_and_exit_status(greeter, capsys):
    assert run_cli(capsys, "greeter", "hello", "--name", "Ada", "--times", "2")[:2] == (
        0,
        ["hello Ada hello Ada"],
    )
    assert run_cli(capsys, "greeter", "hello", "--name", "nobody")[0] == 3
    assert run_cli(capsys, "greeter", "count", "3")[:2] == (0, ["[0, 1, 2]"])
    assert options_built == ["hello", "hello", "count"]  # only the command being run


def test_top_level_help_lists_domains_with_commands_without_building_their_options(greeter, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "--help")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "greeter" in out and "commands: hello, count" in out
    assert "silent" not in out  # a domain without commands adds nothing
    assert options_built == []


def test_domain_help_lists_its_commands_and_command_help_its_options(greeter, capsys):
    with pytest.raises(SystemExit):
        run_cli(capsys, "greeter", "--help")
    out = capsys.readouterr().out
    assert "say hello" in out and "count up" in out and "--name" not in out
    with pytest.raises(SystemExit):
        run_cli(capsys, "greeter", "count", "--help")
    out = capsys.readouterr().out
    assert "Counts to N." in out and "n" in out
    assert options_built == ["count"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["greeter"], "the following arguments are required: COMMAND"),
        (["greeter", "bye"], "invalid choice: 'bye'"),
        (["greeter", "hello"], "the following arguments are required: --name"),
        (["greeter", "hello", "--name", "x", "--times", "two"], "invalid int value: 'two'"),
        (["silent", "hello"], "invalid choice: 'silent'"),
    ],
)
def test_argument_errors_exit_2_naming_the_problem(greeter, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, *argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_domain_named_like_a_core_command_does_not_shadow_it(greeter, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "kb", "hello")
    assert exit_info.value.code == 2
    assert "invalid choice: 'hello'" in capsys.readouterr().err  # core's kb answered


def test_core_commands_are_parsed_without_loading_the_plugins(greeter):
    from domainvlm.core.cli import build_parser

    parser = build_parser(["domains"], with_domains=False)
    assert "greeter" not in parser._subparsers._group_actions[0].choices
    args = build_parser(["greeter count"]).parse_args(["greeter", "count", "1"])
    assert (args.domain_command, args.n) == ("count", 1)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["comics", "predict", "--help"], "--detector DETECTOR"),
        (["comics", "predict", "--pages"], "argument --pages: expected one argument"),
        (["comics"], "required: COMMAND"),
    ],
)
def test_the_comics_predict_command_answers_help_and_errors_without_torch(
    argv: list[str], expected: str
):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    line = next(row for row in done.stderr.splitlines() if row.startswith("RESULT"))
    assert line == "RESULT ", f"{argv} imported {line.split(' ', 1)[1]}"
    assert expected in done.stdout + done.stderr
