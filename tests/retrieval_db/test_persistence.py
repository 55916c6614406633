from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np
import pytest
from domainvlm.retrieval_db import (
    CorruptKnowledgeBaseError,
    KnowledgeBase,
    KnowledgeBaseError,
    persistence,
    storage,
)
from domainvlm.retrieval_db.metadata import MetadataStore

from tests.helpers import ENCODER, clustered, records_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def ids_of(results: list) -> list[list[int]]:
    return [[hit.id for hit in hits] for hits in results]


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """A saved HNSW knowledge base with some deletions (tombstones) in it."""
    data = clustered(1_200, 16)
    kb = KnowledgeBase.from_vectors(data, records_for(1_200), encoder=ENCODER)
    kb.delete(range(0, 1_200, 4))
    kb.save(tmp_path / "kb")
    return tmp_path / "kb", data


@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("factory", [None, "Flat", "IVF16,Flat"])
def test_save_load_round_trip(tmp_path: Path, mmap: bool, factory: str | None) -> None:
    data = clustered(1_200, 16)
    kb = KnowledgeBase.from_vectors(
        data, records_for(1_200), encoder=ENCODER, index_factory=factory
    )
    kb.delete([1, 2, 3])
    before = kb.search(data[:8], 7, encoder=ENCODER, where={"lang": "de"})
    unfiltered = kb.search(data[:8], 7, encoder=ENCODER)
    kb.save(tmp_path / "kb")

    loaded = KnowledgeBase.load(tmp_path / "kb", mmap=mmap)
    assert loaded.search(data[:8], 7, encoder=ENCODER, where={"lang": "de"}) == before
    assert loaded.search(data[:8], 7, encoder=ENCODER) == unfiltered
    assert len(loaded) == 1_197 and loaded.get([1, 4]) == [None, records_for(5)[4]]
    assert (loaded.index_info, loaded.recall) == (kb.index_info, kb.recall)

    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert (manifest["dimension"], manifest["metric"]) == (16, "cosine")
    assert (manifest["count"], manifest["stored_vectors"], manifest["next_id"]) == (
        1197,
        1200,
        1200,
    )
    assert manifest["encoder"] == ENCODER
    assert manifest["index"]["factory"] == (factory or "HNSW32")
    assert manifest["recall"]["k"] == 10 and manifest["recall"]["value"] == kb.recall.value
    datetime.fromisoformat(manifest["created_at"])
    assert set(manifest["files"]) == {"index", "metadata", "vectors", "ids"}


def test_mmap_loaded_base_can_be_updated_and_saved_in_place(saved) -> None:
    directory, data = saved
    kb = KnowledgeBase.load(directory, mmap=True)
    new = kb.add(data[:3] + 0.01, [{"new": i} for i in range(3)], encoder=ENCODER)
    np.testing.assert_array_equal(new, [1200, 1201, 1202])
    kb.save(directory)  # overwrites the very files it was mapped from
    assert kb.search(data[5:6], 1, encoder=ENCODER)[0][0].id == 5

    reloaded = KnowledgeBase.load(directory)
    assert len(reloaded) == 900 + 3
    assert reloaded.search(data[1:2] + 0.01, 1, encoder=ENCODER)[0][0].record == {"new": 1}
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 6 and names[0] == ".lock" and "manifest.json" in names  # old gen gone


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != ".lock"}


def _fail(*args, **kwargs):
    raise OSError("disk full (injected)")


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (faiss, "write_index"),
        (MetadataStore, "save"),
        (persistence, "_write_array"),
        (storage.os, "replace"),
        (storage, "_fsync"),
    ],
)
def test_failed_save_leaves_the_previous_base_intact(
    saved, monkeypatch: pytest.MonkeyPatch, target, name: str
) -> None:
    directory, data = saved
    files_before = _files(directory)
    expected = ids_of(KnowledgeBase.load(directory).search(data[:4], 5, encoder=ENCODER))
    kb = KnowledgeBase.load(directory)
    kb.add(data[:10], records_for(10), encoder=ENCODER)
    monkeypatch.setattr(target, name, _fail)
    with pytest.raises(OSError, match="injected"):
        kb.save(directory)
    monkeypatch.undo()
    assert _files(directory) == files_before  # nothing half-written left behind
    reloaded = KnowledgeBase.load(directory)
    assert len(reloaded) == 900
    assert ids_of(reloaded.search(data[:4], 5, encoder=ENCODER)) == expected


def test_failure_after_the_commit_point_keeps_the_new_base(
    saved, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, data = saved
    kb = KnowledgeBase.load(directory)
    kb.add(data[:10], records_for(10), encoder=ENCODER)
    monkeypatch.setattr(storage, "_remove_superseded", _fail)
    with pytest.raises(OSError, match="injected"):
        kb.save(directory)
    monkeypatch.undo()
    assert len(KnowledgeBase.load(directory)) == 910  # committed, only the clean-up failed
    kb.save(directory)
    assert len(list(directory.iterdir())) == 6  # and the next save cleans up


def test_process_killed_mid_save_leaves_the_previous_base_loadable(saved) -> None:
    directory, data = saved
    script = textwrap.dedent(
        f"""
        import os
        import numpy as np
        from domainvlm.retrieval_db import KnowledgeBase, storage
        kb = KnowledgeBase.load({str(directory)!r})
        kb.add(np.ones((2, 16), dtype=np.float32), [{{}}, {{}}], encoder={ENCODER!r})
        storage.os.replace = lambda *args: os._exit(9)  # die just before the commit
        kb.save({str(directory)!r})
        """
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 9
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith("manifest.")]
    assert len(leftovers) == 2  # manifest.json plus the staged one that never got committed

    kb = KnowledgeBase.load(directory)
    assert len(kb) == 900
    kb.save(directory)  # the next save sweeps away the dead generation
    assert sorted(p.name for p in directory.iterdir())[:2] == [".lock", "ids." + _token(directory)]
    assert len(list(directory.iterdir())) == 6


def _token(directory: Path) -> str:
    return json.loads((directory / "manifest.json").read_text())["files"]["ids"]["name"][4:]


def _assert_single_clean_generation(directory: Path) -> None:
    token = _token(directory).removesuffix(".npy")
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [".lock", "manifest.json"]
        + [f"{role}.{token}{suffix}" for role, suffix in storage.FILE_SUFFIXES.items()]
    )


SAVE_FOREVER = """
import sys, time
import numpy as np
from domainvlm.retrieval_db import KnowledgeBase
target, scratch = sys.argv[1:3]
vectors = np.random.default_rng(0).standard_normal((4000, 16)).astype(np.float32)
records = [{"row": i, "text": "a long description " * 12} for i in range(4000)]
kb = KnowledgeBase.from_vectors(vectors, records, encoder=ENCODER, index_factory="Flat")
start = time.perf_counter()
kb.save(scratch)  # a warm-up save elsewhere tells the parent how long one save takes
print(time.perf_counter() - start, flush=True)
while True:  # the first save goes into a new folder, the later ones replace it
    kb.save(target)
"""


def test_saves_killed_at_random_moments_never_block_the_next_save(tmp_path: Path) -> None:
    """SIGKILL a process that saves in a loop, after random delays spanning about two saves
    (so about half the kills land in the first save into a new folder); the next save must
    succeed and leave only its own generation."""
    import random
    import signal

    rng = random.Random(0)
    script = f"ENCODER = {ENCODER!r}\n" + SAVE_FOREVER
    fresh = np.random.default_rng(1).standard_normal((30, 16)).astype(np.float32)
    for trial in range(4):  # about 0.4 s each, mostly the child's start-up
        directory = tmp_path / f"kb{trial}"
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(directory), str(tmp_path / f"scratch{trial}")],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            one_save = float(child.stdout.readline())
            time.sleep(rng.uniform(0, 2 * one_save))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            child.stdout.close()
        kb = KnowledgeBase.from_vectors(fresh, records_for(30), encoder=ENCODER)
        kb.save(directory)
        _assert_single_clean_generation(directory)
        assert len(KnowledgeBase.load(directory)) == 30


def test_a_dead_sqlite_journal_in_a_new_folder_is_swept_away(tmp_path: Path) -> None:
    """What a save killed inside SQLite left behind before saves stopped journalling: a
    half-written database with its hot rollback journal, and no manifest yet."""
    directory = tmp_path / "kb"
    directory.mkdir()
    database = directory / "metadata.0123456789ab.sqlite"
    script = textwrap.dedent(
        f"""
        import os, sqlite3
        connection = sqlite3.connect({str(database)!r})
        connection.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, record TEXT)")
        connection.commit()
        connection.execute("INSERT INTO records VALUES (1, 'x')")
        os._exit(9)  # inside the write transaction
        """
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=60).returncode == 9
    assert (directory / "metadata.0123456789ab.sqlite-journal").exists()
    kb = KnowledgeBase.from_vectors(clustered(20, 4), records_for(20), encoder=ENCODER)
    kb.save(directory)
    _assert_single_clean_generation(directory)
    assert len(KnowledgeBase.load(directory)) == 20


def test_failed_build_leaves_the_previous_base_intact(saved) -> None:
    directory, _ = saved
    files_before = _files(directory)

    def crashing_encoder(batch: list[str]) -> np.ndarray:
        if batch[0] == "c":
            raise RuntimeError("encoder crashed (injected)")
        return np.ones((len(batch), 16), dtype=np.float32)

    with pytest.raises(RuntimeError, match="injected"):
        KnowledgeBase.from_texts(
            list("abcd"), crashing_encoder, encoder=ENCODER, batch_size=2, progress=False
        ).save(directory)
    assert _files(directory) == files_before
    assert len(KnowledgeBase.load(directory)) == 900


def _manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())


def _path_of(directory: Path, role: str) -> Path:
    return directory / _manifest(directory)["files"][role]["name"]


@pytest.mark.parametrize("role", ["index", "metadata", "vectors", "ids"])
def test_missing_file_is_named(saved, role: str) -> None:
    directory, _ = saved
    path = _path_of(directory, role)
    path.unlink()
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}: the {role} file .* is missing"):
        KnowledgeBase.load(directory)


@pytest.mark.parametrize("role", ["index", "metadata", "vectors", "ids"])
def test_truncated_or_altered_file_is_named(saved, role: str) -> None:
    directory, _ = saved
    path = _path_of(directory, role)
    content = bytearray(path.read_bytes())
    path.write_bytes(content[:-10])
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}: the {role} file is corrupt"):
        KnowledgeBase.load(directory)
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(content)
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}.*sha256 differs"):
        KnowledgeBase.load(directory)


@pytest.mark.parametrize(
    ("role", "message"),
    [
        ("index", "FAISS cannot read the index file"),
        ("metadata", "not an SQLite database"),
        ("vectors", "not a readable .npy array"),
    ],
)
def test_unverified_garbage_is_named_by_the_reader(saved, role: str, message: str) -> None:
    directory, _ = saved
    path = _path_of(directory, role)
    size = path.stat().st_size
    path.write_bytes(b"\x07garbage" * (size // 8) + b"\x00" * (size % 8))
    with pytest.raises(CorruptKnowledgeBaseError, match=f"{path}: .*{message}"):
        KnowledgeBase.load(directory, verify=False)


def test_a_version_1_manifest_reads_as_recall_measured_with_stored_vectors(saved) -> None:
    directory, _ = saved
    manifest = _manifest(directory)
    manifest["format_version"] = 1
    del manifest["recall"]["query_kind"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert KnowledgeBase.load(directory).recall.query_kind == "stored"


def test_unknown_format_version_is_refused(saved) -> None:
    directory, _ = saved
    manifest = _manifest(directory)
    manifest["format_version"] = 99
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(
        CorruptKnowledgeBaseError, match="manifest.json: unknown .*format_version 99"
    ):
        KnowledgeBase.load(directory)


def test_manifest_problems_are_named(saved, tmp_path: Path) -> None:
    directory, _ = saved
    manifest = _manifest(directory)
    manifest["count"] = 901
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptKnowledgeBaseError, match="metadata file does not match"):
        KnowledgeBase.load(directory)
    del manifest["encoder"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptKnowledgeBaseError, match="manifest.json: invalid manifest"):
        KnowledgeBase.load(directory)
    (directory / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptKnowledgeBaseError, match="manifest.json: manifest is not readable"):
        KnowledgeBase.load(directory)
    (directory / "manifest.json").unlink()
    with pytest.raises(CorruptKnowledgeBaseError, match="manifest.json: manifest is missing"):
        KnowledgeBase.load(directory)
    with pytest.raises(CorruptKnowledgeBaseError, match="no such knowledge-base directory"):
        KnowledgeBase.load(tmp_path / "nowhere")


def test_refuses_to_save_into_a_directory_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    kb = KnowledgeBase.from_vectors(clustered(20, 4), records_for(20), encoder=ENCODER)
    with pytest.raises(KnowledgeBaseError, match="refusing to save.*notes.txt"):
        kb.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
