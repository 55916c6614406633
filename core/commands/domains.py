"""List the installed domain plugins, what they read, and their configs."""

from __future__ import annotations

import argparse
import json

from domainvlm.core.registry import load_domains

HELP = "list installed domain plugins and their configs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per domain")


def run(args: argparse.Namespace) -> int:
    domains = load_domains()
    if not domains:
        print("no domain plugins are installed (entry-point group 'domainvlm.domains')")
        return 0
    for plugin in domains.values():
        configs = [str(path) for path in plugin.configs()]
        if args.json:
            record = {
                "name": plugin.name,
                "description": plugin.description,
                "modalities": list(plugin.modalities),
                "input_format": plugin.input_format,
                "channels": plugin.channels,
                "data_licence": plugin.data_licence,
                "configs": configs,
            }
            print(json.dumps(record, ensure_ascii=False))
            continue
        print(f"{plugin.name}: {plugin.description}")
        print(f"  modalities:   {', '.join(plugin.modalities)}")
        print(f"  input format: {plugin.input_format}")
        print(f"  channels:     {plugin.channels}")
        print(f"  data licence: {plugin.data_licence}")
        print("  configs:      " + ("\n                ".join(configs) or "none"))
    return 0
