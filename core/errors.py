"""Errors a user can fix: the CLI prints their message as one paragraph instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class DomainVLMError(Exception):
    """Base for errors caused by input, configuration or files rather than by a bug."""


class DataRootError(DomainVLMError, FileNotFoundError):
    pass


class CheckpointError(DomainVLMError):
    pass


class FileError(DomainVLMError, ValueError):
    """One named file and what is wrong with it; ``str()`` is ``"<path>: <problem>"``.

    Every domain's file errors subclass this, so a caller can report, count or skip bad files
    (``error.path``) without knowing which domain or format raised them.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple:
        # Exception pickling replays ``args`` (the message); DataLoader workers need both fields.
        return type(self), (self.path, self.problem)


class AnnotationError(FileError):
    """An annotation or split file that is missing or does not follow its dataset's format."""


class ImageReadError(FileError):
    """An image that is missing, corrupt, too large, or in a format nothing reads."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the cap allows; nothing was decoded."""
