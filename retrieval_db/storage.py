"""Crash-safe saving of a knowledge-base directory.

Each save writes a new *generation* of data files under fresh names beside the old ones, fsyncs
them, and then commits by atomically replacing ``manifest.json`` (one ``os.replace``), which names
the files of exactly one complete generation. A crash or exception at any moment therefore leaves
either the old or the new manifest, each pointing at complete files; only after the commit are the
superseded files removed. This is stronger than swapping whole directories, which has a moment with
no directory at the target path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from domainvlm.retrieval_db.errors import CorruptKnowledgeBaseError, KnowledgeBaseError
from domainvlm.retrieval_db.manifest import FILE_ROLES, MANIFEST_NAME, Manifest, StoredFile

FILE_SUFFIXES = {"index": ".faiss", "metadata": ".sqlite", "vectors": ".npy", "ids": ".npy"}
LOCK_NAME = ".lock"
_GENERATION_FILE = re.compile(
    r"^(index|metadata|vectors|ids|manifest)\.[0-9a-f]{12}"
    r"\.(faiss|npy|tmp|sqlite(-journal|-wal|-shm)?)$"
)
"""Every file a save creates, including the staged manifest (``.tmp``) and the sidecars SQLite
makes beside a database while writing it: a save killed at any moment leaves only these, and the
next save into the directory removes them."""


@contextlib.contextmanager
def directory_lock(directory: Path, exclusive: bool) -> Iterator[None]:
    """Serialise saves (exclusive) against each other and against loads (shared), across processes.

    A read-only directory cannot hold a lock file; loading it then proceeds unlocked, since nobody
    can be saving into it.
    """
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        if exclusive or error.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def commit_generation(
    directory: Path,
    write_files: Callable[[dict[str, Path]], None],
    build_manifest: Callable[[dict[str, StoredFile]], Manifest],
) -> Manifest:
    """Write a new generation with ``write_files(paths by role)`` and commit it with its manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    _refuse_foreign_directory(directory)
    with directory_lock(directory, exclusive=True):
        token = uuid.uuid4().hex[:12]
        paths = {role: directory / f"{role}.{token}{FILE_SUFFIXES[role]}" for role in FILE_ROLES}
        staged_manifest = directory / f"manifest.{token}.tmp"
        try:
            write_files(paths)
            entries = {role: _describe(path) for role, path in paths.items()}
            manifest = build_manifest(entries)
            staged_manifest.write_text(manifest.to_json(), encoding="utf-8")
            _fsync(staged_manifest)
            os.replace(staged_manifest, directory / MANIFEST_NAME)  # the commit point
        except BaseException:
            for path in [*paths.values(), staged_manifest]:
                path.unlink(missing_ok=True)
            raise
        _fsync(directory)
        _remove_superseded(directory, keep={entry.name for entry in manifest.files.values()})
        return manifest


def checked_paths(directory: Path, manifest: Manifest, verify_hashes: bool) -> dict[str, Path]:
    """Paths of the manifest's files, after checking each exists with the recorded size (and hash)."""
    paths = {}
    for role, entry in manifest.files.items():
        path = directory / entry.name
        if not path.is_file():
            raise CorruptKnowledgeBaseError(
                f"{path}: the {role} file named in {directory / MANIFEST_NAME} is missing"
            )
        size = path.stat().st_size
        if size != entry.bytes:
            raise CorruptKnowledgeBaseError(
                f"{path}: the {role} file is corrupt: {size} bytes on disk, {entry.bytes} recorded "
                "in the manifest (truncated or overwritten)"
            )
        if verify_hashes and _sha256(path) != entry.sha256:
            raise CorruptKnowledgeBaseError(
                f"{path}: the {role} file is corrupt: its sha256 differs from the manifest's"
            )
        paths[role] = path
    return paths


def _refuse_foreign_directory(directory: Path) -> None:
    """Never mix knowledge-base files into (and later clean up) a directory holding other data."""
    if (directory / MANIFEST_NAME).exists():
        return
    strangers = [
        entry.name
        for entry in directory.iterdir()
        if entry.name != LOCK_NAME and not _GENERATION_FILE.match(entry.name)
    ]
    if strangers:
        raise KnowledgeBaseError(
            f"{directory}: refusing to save a knowledge base into a directory that is not one "
            f"(it has no {MANIFEST_NAME} and holds {sorted(strangers)[:5]})"
        )


def _remove_superseded(directory: Path, keep: set[str]) -> None:
    """Delete older generations and leftovers of crashed saves (safe: we hold the save lock)."""
    for entry in directory.iterdir():
        if _GENERATION_FILE.match(entry.name) and entry.name not in keep:
            entry.unlink(missing_ok=True)


def _describe(path: Path) -> StoredFile:
    _fsync(path)
    return StoredFile(name=path.name, bytes=path.stat().st_size, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
