"""Argparse commands of the ``domainvlm`` CLI: each module has HELP, add_arguments and run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from domainvlm.core.model_input import InputAdjustment, parse_bands, parse_rescale


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the model runs: cpu (default), cuda, cuda:N, mps, or auto (a GPU if any)",
    )


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """``--bands`` and ``--rescale``: how a file that differs from the training data maps onto it."""
    parser.add_argument(
        "--bands",
        type=_argument(parse_bands),
        metavar="B1,B2,...",
        help="1-based bands of your files, in the model's channel order (for files whose band "
        "count or order differs from the checkpoint's training data)",
    )
    parser.add_argument(
        "--rescale",
        type=_argument(parse_rescale),
        metavar="SCALE[,OFFSET]",
        help="pixel * SCALE + OFFSET puts your values on the training data's scale (for files of "
        "another bit depth or unit than the checkpoint's training data)",
    )


def input_adjustment(args: argparse.Namespace) -> InputAdjustment | None:
    bands, rescale = getattr(args, "bands", None), getattr(args, "rescale", None)
    if bands is None and rescale is None:
        return None
    return InputAdjustment(bands=bands, rescale=rescale)


def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_argument(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse_argument
