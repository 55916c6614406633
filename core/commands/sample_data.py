"""Write a domain's offline sample dataset, in the same on-disk format as the real public dataset.

The samples are synthetic (and say so in a README.txt) but carry learnable structure, so a short CPU
training run on them shows real learning. Then train with:
    domainvlm fit --config configs/<domain>/<config>.yaml --data.root DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from domainvlm.core.files import check_output_folder
from domainvlm.core.registry import get_domain, installed_domain_names

HELP = "write a domain's offline sample dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "domain", help=f"domain name ({', '.join(installed_domain_names()) or 'none'})"
    )
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--size",
        choices=("small", "demo"),
        default="demo",
        help="small: seconds to write (tests); demo: enough to show learning (default)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (output is deterministic)")


def run(args: argparse.Namespace) -> int:
    plugin = get_domain(args.domain)
    check_output_folder(args.out)
    out = plugin.write_sample(args.out, size=args.size, seed=args.seed)
    print(f"wrote {plugin.name} sample data ({args.size}) to {out}")
    return 0
