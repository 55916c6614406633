"""CUDA paths, run by ``pytest -m gpu`` (benchmarks/gpu_check.sh); skipped without a CUDA GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.towers.token_merging import TokenMerging, apply_token_merging
from domainvlm.core.zeroshot import ZeroShotClassifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TINY = "openclip:dvlm-tiny"


def _images() -> torch.Tensor:
    return torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _pair(**options) -> tuple:
    torch.manual_seed(0)
    cpu = load_encoder(TINY, "cpu", **options)
    torch.manual_seed(0)
    return cpu, load_encoder(TINY, "cuda", **options)


def test_encoder_on_cuda_matches_cpu() -> None:
    cpu, cuda = _pair()
    assert next(cuda.modules[0].parameters()).is_cuda
    on_gpu = cuda.encode_images(_images())
    assert on_gpu.device.type == "cpu"  # results always come back on the CPU
    assert F.cosine_similarity(cpu.encode_images(_images()), on_gpu).min() > 0.999
    texts = ["a red square", "a river"]
    assert F.cosine_similarity(cpu.encode_texts(texts), cuda.encode_texts(texts)).min() > 0.999


def test_token_merging_and_bf16_on_cuda() -> None:
    cpu, cuda = _pair(token_merging=8)
    reference = cpu.encode_images(_images())
    assert F.cosine_similarity(reference, cuda.encode_images(_images())).min() > 0.99
    _, half = _pair(token_merging=8, precision="bf16")
    assert F.cosine_similarity(reference, half.encode_images(_images())).min() > 0.98


def test_pitome_merging_trains_on_cuda() -> None:
    _, cuda = _pair()
    (model,) = cuda.modules
    apply_token_merging(model, TokenMerging(8, energy=True))
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model.encode_image(_images().cuda()).float().pow(2).mean()
    loss.backward()
    assert torch.isfinite(model.visual.conv1.weight.grad).all()


def test_zero_shot_classifier_on_cuda_matches_cpu() -> None:
    cpu, cuda = _pair()
    classes, templates = ["red", "green", "blue"], ["a photo of {}."]
    expected = ZeroShotClassifier(cpu).logits(_images(), classes, templates)
    found = ZeroShotClassifier(cuda).logits(_images(), classes, templates)
    assert torch.allclose(expected, found, atol=0.05)


def test_faiss_gpu_index_matches_cpu() -> None:
    faiss = pytest.importorskip("faiss")
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("faiss-cpu installed (the `gpu` extra brings faiss-gpu)")
    vectors = np.random.default_rng(0).standard_normal((2000, 64)).astype("float32")
    index = faiss.IndexFlatIP(64)
    index.add(vectors)
    gpu = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    assert (index.search(vectors[:50], 5)[1] == gpu.search(vectors[:50], 5)[1]).mean() > 0.99
