from __future__ import annotations

import threading

import numpy as np
import pytest
from domainvlm.retrieval_db import KnowledgeBase
from domainvlm.retrieval_db.locking import ReadWriteLock

from tests.helpers import ENCODER, clustered

BATCH = 5
BATCHES = 60
READERS = 4


@pytest.mark.parametrize("factory", [None, "IVF8,Flat"])
def test_readers_never_see_a_half_written_update(factory: str | None) -> None:
    """One writer adds batches of BATCH copies of a probe vector, deletes old batches and
    compacts; readers searching for the probe must always see whole batches, k hits, and a
    record for every hit."""
    base = clustered(400, 16)
    probe = -base.mean(axis=0)
    probe /= np.linalg.norm(probe)
    kb = KnowledgeBase.from_vectors(
        base, [{"batch": None}] * len(base), encoder=ENCODER, index_factory=factory
    )
    done = threading.Event()
    errors: list[BaseException] = []
    searches = [0] * READERS

    def writer() -> None:
        try:
            batch_ids: dict[int, np.ndarray] = {}
            for batch in range(BATCHES):
                copies = np.repeat(probe[None], BATCH, axis=0)
                batch_ids[batch] = kb.add(copies, [{"batch": batch}] * BATCH, encoder=ENCODER)
                if batch % 3 == 2:
                    kb.delete(batch_ids.pop(batch - 2).tolist())
                if batch == BATCHES // 2:
                    kb.compact()
        except BaseException as error:
            errors.append(error)
        finally:
            done.set()

    def reader(number: int) -> None:
        try:
            while not done.is_set() or searches[number] == 0:
                hits = kb.search(probe, 300, encoder=ENCODER)[0]
                assert len(hits) == 300  # more than the live copies: no batch is cut
                assert all(hit.record is not None for hit in hits)
                batches = [hit.record["batch"] for hit in hits if hit.record["batch"] is not None]
                counts = np.bincount(batches, minlength=1)
                assert set(counts[counts > 0].tolist()) <= {BATCH}, f"partial batch: {counts}"
                searches[number] += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[0]
    assert min(searches) > 0
    # Finally: 60 batches added, 20 deleted.
    hits = kb.search(probe, 300, encoder=ENCODER)[0]
    assert len({hit.record["batch"] for hit in hits if hit.record["batch"] is not None}) == 40


def test_rw_lock_excludes_writers_from_readers_and_each_other() -> None:
    lock = ReadWriteLock()
    inside: list[str] = []
    violations: list[list[str]] = []
    guard = threading.Lock()

    def enter(kind: str) -> None:
        with guard:
            inside.append(kind)
            if "w" in inside and len(inside) > 1:
                violations.append(list(inside))

    def leave(kind: str) -> None:
        with guard:
            inside.remove(kind)

    def work(kind: str) -> None:
        for _ in range(200):
            with lock.writing() if kind == "w" else lock.reading():
                enter(kind)
                leave(kind)

    threads = [threading.Thread(target=work, args=(kind,)) for kind in "rrrww"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not violations
