"""The ``domainvlm`` console script.

``fit``/``validate``/``test``/``predict`` are LightningCLI subcommands (configs with ``class_path`` /
``init_args``); every other command is a small argparse command in ``core/commands/``.
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

Run `domainvlm <command> --help` for the options of each command.
Errors in input, configs or files print as one paragraph (DOMAINVLM_DEBUG=1 adds the traceback);
anything else is a bug in domainvlm and shows its traceback."""


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """Every command with its one-line help; the options only of ``commands`` (default: all).

    A command's ``add_arguments`` may import torch or load the domain plugins (``eval`` adds each
    domain's tasks), so ``main`` builds only the one being run: ``--help``, ``domains`` and
    argument errors then answer in well under a second."""
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            from domainvlm.core.lightning_cli import run_lightning

            run_lightning(argv)
            return 0
        parser = build_parser([argv[0]] if argv and argv[0] in COMMANDS else [])
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
