"""The options of the surgical ``domainvlm eval`` tasks (phases, tools, probe).

Kept apart from the tasks, which import torch and the video readers: ``domainvlm eval --help``
builds every task's options and must stay fast."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_release_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bert-dir",
        help="Bio_ClinicalBERT folder (config + tokenizer): --checkpoint is then a public SurgVLP, "
        "HecVL or PeskaVLP release (.pth), converted in memory",
    )


def add_phase_arguments(parser: argparse.ArgumentParser) -> None:
    add_release_argument(parser)
    parser.add_argument(
        "--timeline", type=Path, help="write a phase timeline PNG (truth above prediction)"
    )
    parser.add_argument("--confusion-matrix", type=Path, help="write a confusion-matrix PNG")


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    add_release_argument(parser)
    parser.add_argument(
        "--no-cholect50", action="store_true", help="skip CholecT50 labels even if present"
    )


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    add_release_argument(parser)
    parser.add_argument("--train-split", default="train", help="split the probe is fit on")
    parser.add_argument("--shots", type=int, default=0, help="training videos used (0 = all)")
    parser.add_argument("--weight-decay", type=float, default=1e-3)
