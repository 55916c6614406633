"""Metadata records in SQLite: row id == vector id, each record one JSON document.

SQLite is a real, inspectable store (``sqlite3 metadata.*.sqlite``) that needs no extra package and
can filter on JSON fields. The store lives in memory while a knowledge base is open, so edits never
touch the saved files until the next atomic save.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from domainvlm.retrieval_db.errors import CorruptKnowledgeBaseError, FilterError

_SCHEMA = "CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT NOT NULL)"
Scalar = str | int | float | bool | None
MAX_FILTER_FIELDS = 64
"""Fields one filter may name: each adds a clause to one SQL expression."""


class MetadataStore:
    """Thread-safe: one connection guarded by a lock, every statement atomic."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()

    @classmethod
    def empty(cls) -> MetadataStore:
        connection = _memory_connection()
        connection.execute(_SCHEMA)
        return cls(connection)

    @classmethod
    def load(cls, path: Path) -> MetadataStore:
        """Copy a saved store into memory, refusing files that are not a sound records table."""
        try:
            source = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as error:
            raise CorruptKnowledgeBaseError(
                f"{path}: cannot open metadata file: {error}"
            ) from error
        try:
            check = source.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise CorruptKnowledgeBaseError(f"{path}: metadata file is corrupt: {check}")
            columns = [row[1] for row in source.execute("PRAGMA table_info(records)")]
            if columns != ["id", "record"]:
                raise CorruptKnowledgeBaseError(
                    f"{path}: metadata file has no records(id, record) table (found {columns})"
                )
            connection = _memory_connection()
            source.backup(connection)
        except sqlite3.DatabaseError as error:
            raise CorruptKnowledgeBaseError(
                f"{path}: metadata file is corrupt or not an SQLite database: {error}"
            ) from error
        finally:
            source.close()
        return cls(connection)

    def save(self, path: Path) -> None:
        """Copy the store into a new file ``path``.

        No rollback journal and no syncing: the file is fresh, a save that dies part-way is
        discarded whole (the manifest never names it), and the caller fsyncs it once complete.
        """
        destination = sqlite3.connect(path)
        try:
            destination.execute("PRAGMA journal_mode=OFF")
            destination.execute("PRAGMA synchronous=OFF")
            with self._lock:
                self._connection.backup(destination)
        finally:
            destination.close()

    def insert(self, ids: Sequence[int], records: Sequence[Mapping[str, Any]]) -> None:
        if len(ids) != len(records):
            raise ValueError(f"{len(ids)} ids but {len(records)} metadata records")
        rows = [
            (int(i), _to_json(record, position))
            for position, (i, record) in enumerate(zip(ids, records))
        ]
        with self._lock, self._connection:
            try:
                self._connection.executemany("INSERT INTO records VALUES (?, ?)", rows)
            except sqlite3.IntegrityError as error:
                raise ValueError(
                    f"metadata insert refused, an id is already used: {error}"
                ) from None

    def delete(self, ids: Iterable[int]) -> np.ndarray:
        """Delete the given ids; returns those that existed."""
        with self._lock, self._connection:
            cursor = self._connection.execute(
                "DELETE FROM records WHERE id IN (SELECT value FROM json_each(?)) RETURNING id",
                (_id_array(ids),),
            )
            return np.sort(np.array([row[0] for row in cursor], dtype=np.int64))

    def get(self, ids: Iterable[int]) -> list[dict[str, Any] | None]:
        """Records in the order of ``ids``; ``None`` for ids that do not exist (any more)."""
        wanted = [int(i) for i in ids]
        with self._lock:
            rows = self._connection.execute(
                "SELECT id, record FROM records WHERE id IN (SELECT value FROM json_each(?))",
                (json.dumps(wanted),),
            ).fetchall()
        found = {row_id: json.loads(text) for row_id, text in rows}
        return [found.get(i) for i in wanted]

    def ids(self) -> np.ndarray:
        with self._lock:
            rows = self._connection.execute("SELECT id FROM records ORDER BY id").fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)

    def fields(self) -> dict[str, set[str]]:
        """Each top-level field any record has, with the JSON types it holds (``text``,
        ``integer``, ``real``, ``true``, ``false``, ``null``, ``array``, ``object``)."""
        query = (
            "SELECT DISTINCT field.key, field.type FROM records, json_each(records.record) AS field"
        )
        with self._lock:
            rows = self._connection.execute(query).fetchall()
        found: dict[str, set[str]] = {}
        for key, kind in rows:
            found.setdefault(key, set()).add(kind)
        return found

    def count(self) -> int:
        with self._lock:
            return self._connection.execute("SELECT count(*) FROM records").fetchone()[0]

    def matching_ids(self, where: Mapping[str, Scalar | Sequence[Scalar]]) -> np.ndarray:
        """Sorted ids of records whose fields equal the given values (a list means any of them).

        ``None`` matches a missing or null field; booleans match JSON true/false only. A field's
        values travel as one JSON array parameter, so a long any-of list costs one clause rather
        than one per value (SQLite caps expression depth at 1000); at most ``MAX_FILTER_FIELDS``
        fields.
        """
        if not where:
            raise FilterError("an empty filter matches everything; pass where=None instead")
        if len(where) > MAX_FILTER_FIELDS:
            raise FilterError(
                f"a filter may name at most {MAX_FILTER_FIELDS} fields, got {len(where)}"
            )
        clauses, parameters = [], []
        for key, wanted in where.items():
            clause, values = _field_clause(key, wanted)
            clauses.append(clause)
            parameters.extend(values)
        query = f"SELECT id FROM records WHERE {' AND '.join(clauses)} ORDER BY id"
        with self._lock:
            rows = self._connection.execute(query, parameters).fetchall()
        return np.array([row[0] for row in rows], dtype=np.int64)


def _memory_connection() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", check_same_thread=False)


def _to_json(record: Mapping[str, Any], position: int) -> str:
    if not isinstance(record, Mapping):
        raise TypeError(f"metadata record {position} must be a dict, got {type(record).__name__}")
    try:
        return json.dumps(dict(record), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(f"metadata record {position} is not JSON-serialisable: {error}") from None


def _id_array(ids: Iterable[int]) -> str:
    return json.dumps([int(i) for i in ids])


def _json_path(key: str) -> str:
    if not isinstance(key, str) or not key or '"' in key or any(ord(c) < 32 for c in key):
        raise FilterError(f"filter field must be a non-empty name without quotes, got {key!r}")
    return f'$."{key}"'


def _field_clause(key: str, wanted: Scalar | Sequence[Scalar]) -> tuple[str, list[Any]]:
    """One parenthesised clause (and its parameters) matching any of ``wanted`` in field ``key``."""
    path = _json_path(key)
    options = list(wanted) if isinstance(wanted, list | tuple | set | frozenset) else [wanted]
    if not options:
        raise FilterError(f"filter on {key!r} lists no values")
    plain, flags, alternatives, parameters = [], set(), [], []
    for value in options:
        if value is None:
            flags.add("null")
        elif isinstance(value, bool):
            flags.add("true" if value else "false")
        elif isinstance(value, str) or (isinstance(value, int | float) and math.isfinite(value)):
            plain.append(value)
        else:
            raise FilterError(
                f"filter on {key!r}: values must be str, int, finite float, bool or None, "
                f"got {value!r}"
            )
    if "null" in flags:
        alternatives.append("json_extract(record, ?) IS NULL")
        parameters.append(path)
    booleans = sorted(flags - {"null"})
    if booleans:
        alternatives.append("json_type(record, ?) IN (SELECT value FROM json_each(?))")
        parameters += [path, json.dumps(booleans)]
    if plain:
        alternatives.append(
            "(json_type(record, ?) NOT IN ('true', 'false') "
            "AND json_extract(record, ?) IN (SELECT value FROM json_each(?)))"
        )
        parameters += [path, path, json.dumps(plain, ensure_ascii=False)]
    return "(" + " OR ".join(alternatives) + ")", parameters
