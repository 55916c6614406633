"""List the installed domain plugins: what they read, their systems and DataModules, their configs.

The systems and DataModules are those the domain's shipped configs train (``model.class_path``,
``data.class_path``), each with the configs that use it. Any of them can be named by its short
class name where LightningCLI takes a class: ``domainvlm fit --data.help RSCaptionDataModule``
prints its options.
"""

from __future__ import annotations

import argparse
import json

from domainvlm.core.registry import DomainPlugin, load_domains

HELP = "list installed domain plugins: systems, DataModules and configs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object per domain")


def config_classes(plugin: DomainPlugin) -> dict[str, dict[str, list[str]]]:
    """``{"systems": {class_path: [config names]}, "datamodules": {...}}`` from the configs."""
    import yaml

    found: dict[str, dict[str, list[str]]] = {"systems": {}, "datamodules": {}}
    for path in plugin.configs():
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue  # `fit --config` reports a broken config with its line; a listing goes on
        for key, kind in (("model", "systems"), ("data", "datamodules")):
            section = config.get(key) if isinstance(config, dict) else None
            class_path = section.get("class_path") if isinstance(section, dict) else None
            if isinstance(class_path, str):
                found[kind].setdefault(class_path, []).append(path.name)
    return found


def import_domain_classes() -> None:
    """Import every installed domain's systems and DataModules, so LightningCLI knows them: its
    ``--help`` lists them and ``--data.help``/``--model.help`` take their short names."""
    import importlib

    for plugin in load_domains().values():
        for classes in config_classes(plugin).values():
            for class_path in classes:
                importlib.import_module(class_path.rpartition(".")[0])


def run(args: argparse.Namespace) -> int:
    domains = load_domains()
    if not domains:
        print("no domain plugins are installed (entry-point group 'domainvlm.domains')")
        return 0
    for plugin in domains.values():
        configs = [str(path) for path in plugin.configs()]
        classes = config_classes(plugin)
        if args.json:
            record = {
                "name": plugin.name,
                "description": plugin.description,
                "modalities": list(plugin.modalities),
                "input_format": plugin.input_format,
                "channels": plugin.channels,
                "data_licence": plugin.data_licence,
                "systems": sorted(classes["systems"]),
                "datamodules": sorted(classes["datamodules"]),
                "configs": configs,
            }
            print(json.dumps(record, ensure_ascii=False))
            continue
        print(f"{plugin.name}: {plugin.description}")
        print(f"  modalities:   {', '.join(plugin.modalities)}")
        print(f"  input format: {plugin.input_format}")
        print(f"  channels:     {plugin.channels}")
        print(f"  data licence: {plugin.data_licence}")
        for kind in ("systems", "datamodules"):
            rows = [
                f"{class_path.rpartition('.')[2]} ({class_path}): {', '.join(names)}"
                for class_path, names in sorted(classes[kind].items())
            ]
            print(f"  {kind + ':':<13} " + ("\n                ".join(rows) or "none"))
        print("  configs:      " + ("\n                ".join(configs) or "none"))
    if not args.json:
        print(
            "\nOptions of a system or DataModule: domainvlm fit --model.help CLASS or "
            "--data.help CLASS (the short name is enough)"
        )
    return 0
