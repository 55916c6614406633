"""Fixtures of the retrieval_db tests: one FAISS thread, a small clustered vector set."""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import pytest

from tests.helpers import clustered


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
