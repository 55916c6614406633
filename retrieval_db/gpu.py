"""Optional GPU copies of an index, for FAISS builds that have GPUs (``faiss-gpu*``).

The CPU index stays the source of truth (it is what gets saved, filtered and updated); a GPU copy
serves plain searches and is rebuilt after any change.
"""

from __future__ import annotations

import faiss

GPU_KINDS = ("flat", "ivf")
"""Index families FAISS can clone to GPU; HNSW has no GPU implementation."""


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def resolve_use_gpu(use_gpu: bool | None) -> bool:
    """``None`` means use GPUs when present; ``True`` insists on them."""
    available = gpu_count() > 0
    if use_gpu and not available:
        raise RuntimeError(
            "use_gpu=True, but the installed FAISS sees no GPU (faiss-cpu is installed, or no "
            "device is visible); install the gpu extra (faiss-gpu-cu12) on a machine with a GPU"
        )
    return available if use_gpu is None else use_gpu


def to_gpu(index: faiss.Index, kind: str, search_params: dict[str, int]) -> faiss.Index | None:
    """A copy of ``index`` on all GPUs with the tuned parameters, or ``None`` if not clonable."""
    if kind not in GPU_KINDS:
        return None
    gpu_index = faiss.index_cpu_to_all_gpus(index)
    for name, value in search_params.items():
        faiss.GpuParameterSpace().set_index_parameter(gpu_index, name, value)
    return gpu_index
