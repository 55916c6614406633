"""Small deterministic vector sets shared by the retrieval_db tests."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

ENCODER = {"name": "test-encoder", "sha256": "a" * 64}
OTHER_ENCODER = {"name": "test-encoder", "sha256": "b" * 64}


def clustered(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors around ``clusters`` centres, the kind of structure embeddings have."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def records_for(n: int) -> list[dict]:
    """Alternating levels and languages, so filters select known, interleaved subsets."""
    return [
        {"row": i, "level": "object" if i % 3 == 0 else "scene", "lang": ["en", "de"][i % 2]}
        for i in range(n)
    ]


@pytest.fixture(autouse=True, scope="package")
def single_faiss_thread() -> Iterator[None]:
    """On a shared 2-core machine, spinning OpenMP threads make small FAISS jobs several times
    slower than one thread does. Restored afterwards for the rest of the session."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture
def vectors() -> np.ndarray:
    return clustered(600, 16)
