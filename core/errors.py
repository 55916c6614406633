"""Errors a user can fix: the CLI prints their message as one paragraph instead of a traceback."""


class DomainVLMError(Exception):
    """Base for errors caused by input, configuration or files rather than by a bug."""


class DataRootError(DomainVLMError, FileNotFoundError):
    pass


class CheckpointError(DomainVLMError):
    pass
