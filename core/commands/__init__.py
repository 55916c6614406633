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


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """``--token-merging`` and ``--precision``: faster inference at a small, measured cost."""
    parser.add_argument(
        "--token-merging",
        type=_argument(_parse_token_merging),
        metavar="R",
        help="merge R similar image tokens in every ViT layer (an int), or that share of each "
        "layer's tokens (a ratio up to 0.5): fewer tokens, faster image encoding (ToMe)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16 runs the towers under bf16 autocast (CPU or GPU); fp32 (default) as trained",
    )


def _parse_token_merging(text: str) -> int | float:
    # imported when the option is given: the module imports torch, which `--help` does not need
    from domainvlm.core.towers.token_merging import parse_token_merging

    return parse_token_merging(text)


def speed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_encoder`` keywords of ``add_speed_arguments``."""
    return {
        "token_merging": getattr(args, "token_merging", None),
        "precision": getattr(args, "precision", "fp32"),
    }


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
