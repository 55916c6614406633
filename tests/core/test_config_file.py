"""``--config FILE`` of the argparse commands: jsonargparse reads it as it reads fit configs."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from domainvlm.core.commands.config_file import LoadConfig


def pair(text: str) -> tuple[int, int]:
    first, second = text.split(",")
    return int(first), int(second)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--config", action=LoadConfig)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--scale", type=float)
    parser.add_argument("--root", type=Path)
    parser.add_argument("--mode", choices=("fast", "exact"), default="fast")
    parser.add_argument("--names", nargs="+")
    parser.add_argument("--pair", type=pair)
    parser.add_argument("--table", action="store_true")
    return parser


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_values_are_typed_as_in_fit_configs(tmp_path: Path):
    path = config(
        tmp_path,
        "size: 8\nscale: 1e-3\nroot: data/x\nmode: exact\nnames: [a, b]\npair: '3,4'\ntable: true\n",
    )
    args = parser().parse_args(["--config", path])
    # yaml.safe_load reads 1e-3 as the string '1e-3'; jsonargparse, like LightningCLI, a float.
    assert args.scale == 0.001 and isinstance(args.scale, float)
    assert (args.size, args.root, args.mode, args.names) == (8, Path("data/x"), "exact", ["a", "b"])
    assert args.pair == (3, 4) and args.table is True


def test_flags_after_the_config_win_and_flags_before_it_lose(tmp_path: Path):
    path = config(tmp_path, "size: 8\nmode: exact\n")
    args = parser().parse_args(["--size", "2", "--config", path, "--mode", "fast"])
    assert (args.size, args.mode, args.scale) == (8, "fast", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("size: eight\n", "Parser key \"size\": Expected a <class 'int'>. Got value: eight"),
        ("mode: slow\n", "'slow' not among choices"),
        (
            "sise: 8\n",
            "unknown option 'sise'; the options are mode, names, pair, root, scale, size",
        ),
        ("pair: '3'\n", "pair: not enough values to unpack"),
        ("- size\n", "Unexpected config"),
        ("size: [\n", "Problems parsing config"),
    ],
)
def test_bad_configs_are_refused_naming_the_file(tmp_path: Path, capsys, text: str, message: str):
    path = config(tmp_path, text)
    with pytest.raises(SystemExit) as refused:
        parser().parse_args(["--config", path])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert f"demo: error: config {path!r}: " in err and message in err
