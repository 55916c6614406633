"""The ``domainvlm`` console script.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands (configs with ``class_path`` /
``init_args``); every other command is a small argparse command in ``core/commands/``, or a
domain's own (``DomainPlugin.commands``), nested under the domain's name: ``domainvlm <domain>
<command>``. Nesting keeps domains from taking core's command names or each other's; a domain
named like a core command is left out (the core command wins).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Collection, Sequence

LIGHTNING_COMMANDS = {
    "fit": "train a system from a config (resume with --ckpt_path last or a checkpoint path)",
    "validate": "run the validation loop of a config on a checkpoint",
    "test": "run the test loop of a config on a checkpoint",
    "predict": "run prediction of a config on a checkpoint",
}

# command name -> module in domainvlm.core.commands with HELP, add_arguments(parser) and run(args) -> int
COMMANDS = {
    "domains": "domainvlm.core.commands.domains",
    "sample-data": "domainvlm.core.commands.sample_data",
    "zeroshot": "domainvlm.core.commands.zeroshot",
    "eval": "domainvlm.core.commands.evaluate",
    "ask": "domainvlm.core.commands.ask",
    "kb": "domainvlm.core.commands.kb",
    "serve": "domainvlm.core.commands.serve",
    "export": "domainvlm.core.commands.export",
    "merge": "domainvlm.core.commands.merge",
}

DESCRIPTION = """\
domainvlm: domain-specialist vision-language models on one PyTorch Lightning core.

Train:     domainvlm fit --config configs/<domain>/<name>.yaml [--data.root DIR] [--trainer.*]
Resume:    domainvlm fit --config ... --ckpt_path last
Inspect:   domainvlm fit --config ... --print_config
Data:      domainvlm sample-data <domain> --out DIR
Domains:   domainvlm domains
Domain:    domainvlm <domain> <command> ...  a domain's own commands (listed below)

Run `domainvlm <command> --help` for the options of each command.
Errors in input, configs or files print as one paragraph (DOMAINVLM_DEBUG=1 adds the traceback);
anything else is a bug in domainvlm and shows its traceback."""


def build_parser(
    commands: Collection[str] | None = None, with_domains: bool = True
) -> argparse.ArgumentParser:
    """Every command with its one-line help; the options only of ``commands`` (default: all; a
    domain's command is named ``"<domain> <command>"``).

    A command's ``add_arguments`` may import torch or load the domain plugins (``eval`` adds each
    domain's tasks), so ``main`` builds only the one being run: ``--help``, ``domains`` and
    argument errors then answer in well under a second. ``with_domains=False`` leaves the domains'
    commands out (a core command is being run: no plugin needs loading)."""
    parser = argparse.ArgumentParser(
        prog="domainvlm", description=DESCRIPTION, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in LIGHTNING_COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if commands is None or name in commands:
            module.add_arguments(command)
        command.set_defaults(run=module.run)
    if with_domains:
        add_domain_commands(sub, commands)
    return parser


def add_domain_commands(sub: argparse._SubParsersAction, commands: Collection[str] | None) -> None:
    """``domainvlm <domain> <command>`` for each installed domain that has commands; the options
    only of those named in ``commands`` (``"<domain> <command>"``, default: all)."""
    from domainvlm.core.registry import load_domains

    for plugin in load_domains().values():
        if not plugin.commands or plugin.name in sub.choices:
            continue
        domain = sub.add_parser(
            plugin.name,
            help=f"the {plugin.name} domain's commands: {', '.join(plugin.commands)}",
            description=f"Commands of the {plugin.name} domain: {plugin.description}",
        )
        tasks = domain.add_subparsers(dest="domain_command", metavar="COMMAND", required=True)
        for name, domain_command in plugin.commands.items():
            parser = tasks.add_parser(
                name,
                help=domain_command.help,
                description=domain_command.description or domain_command.help,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            if commands is None or f"{plugin.name} {name}" in commands:
                domain_command.add_arguments(parser)
            parser.set_defaults(run=domain_command.run)


def check_domain_loaded(name: str | None) -> None:
    """Name the plugin and its exception when ``domainvlm <name> ...`` asks for a domain whose
    plugin failed to load (and no healthy plugin took the name), rather than argparse's
    "invalid choice"."""
    from domainvlm.core.registry import broken_domains, load_domains

    broken = broken_domains().get(name) if name else None
    if broken is not None and name not in load_domains():
        raise broken.load_error()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from domainvlm.core.lightning_cli import run_lightning

            run_lightning(argv)
            return 0
        if argv and argv[0] in COMMANDS:
            parser = build_parser([argv[0]], with_domains=False)
        else:
            parser = build_parser([" ".join(argv[:2])])
            check_domain_loaded(argv[0] if argv else None)
        args = parser.parse_args(argv)
        if not getattr(args, "run", None):
            parser.print_help()
            return 0 if not argv else 2
        return int(args.run(args) or 0)
    except Exception as exc:
        # Only the project's own errors are the user's to fix; anything else is a bug and keeps
        # its traceback. (Imported here: retrieval_db loads faiss, which `--help` does not need.)
        from domainvlm.core.errors import DomainVLMError
        from domainvlm.retrieval_db.errors import KnowledgeBaseError

        if os.environ.get("DOMAINVLM_DEBUG") or not isinstance(
            exc, DomainVLMError | KnowledgeBaseError
        ):
            raise
        print(f"domainvlm: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
