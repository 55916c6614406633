"""Argparse commands of the ``domainvlm`` CLI: each module has HELP, add_arguments and run."""
