from __future__ import annotations

import faiss
import numpy as np
import pytest
from domainvlm.retrieval_db import KnowledgeBase, exact_search, recall_at_k
from domainvlm.retrieval_db.gpu import gpu_count, resolve_use_gpu

from tests.helpers import ENCODER, clustered, records_for

NO_GPU = not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0


@pytest.mark.skipif(not NO_GPU, reason="checks the behaviour of CPU-only FAISS")
def test_insisting_on_a_gpu_without_one_is_a_clear_error() -> None:
    assert gpu_count() == 0 and resolve_use_gpu(None) is False
    with pytest.raises(RuntimeError, match="sees no GPU"):
        KnowledgeBase.from_vectors(clustered(10, 4), records_for(10), encoder=ENCODER, use_gpu=True)


@pytest.mark.skipif(NO_GPU, reason="the installed FAISS has no GPU (faiss-cpu or no device)")
@pytest.mark.parametrize("factory", ["Flat", "IVF32,Flat"])
def test_gpu_search_matches_cpu_search(factory: str) -> None:
    data = clustered(3_000, 32)
    queries = clustered(100, 32, seed=5)
    options = {"encoder": ENCODER, "index_factory": factory}
    gpu = KnowledgeBase.from_vectors(data, records_for(3_000), use_gpu=True, **options)
    cpu = KnowledgeBase.from_vectors(data, records_for(3_000), use_gpu=False, **options)
    on_gpu = [np.array([h.id for h in hits]) for hits in gpu.search(queries, 10, encoder=ENCODER)]
    on_cpu = [np.array([h.id for h in hits]) for hits in cpu.search(queries, 10, encoder=ENCODER)]
    assert recall_at_k(on_gpu, on_cpu) >= 0.95
    assert recall_at_k(on_gpu, exact_search(data, queries, 10, "cosine")[1]) >= 0.9
    gpu.add(queries[:1], [{"added": True}], encoder=ENCODER)  # the GPU copy follows updates
    assert gpu.search(queries[:1], 1, encoder=ENCODER)[0][0].record == {"added": True}
