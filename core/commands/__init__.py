"""Argparse commands of the ``domainvlm`` CLI: each module has HELP, add_arguments and run."""

from __future__ import annotations

import argparse


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="cpu",
        help="where the model runs: cpu (default), cuda, cuda:N, mps, or auto (a GPU if any)",
    )
