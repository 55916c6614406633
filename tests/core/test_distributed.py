"""Two CPU processes (gloo) must reproduce the single-process losses and gradients.

Each rank feeds half of a batch through tiny linear towers. After DDP-style averaging
(all_reduce / world size) every parameter gradient must equal the gradient of the single-process
loss on the whole batch; the mean of the per-rank losses must equal that loss.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from domainvlm.core import distributed
from domainvlm.core.losses import DINOLoss, LogitScale, clip_loss, mil_nce_loss, nt_xent_loss
from torch import Tensor, nn

WORLD = 2
BATCH = 8  # whole batch; each rank gets BATCH // WORLD rows
IN_DIM, OUT_DIM, BAG = 6, 4, 3


def _towers() -> nn.ModuleDict:
    torch.manual_seed(0)
    return nn.ModuleDict(
        {
            "image": nn.Linear(IN_DIM, OUT_DIM),
            "text": nn.Linear(IN_DIM, OUT_DIM),
            "scale": LogitScale(),
        }
    ).double()


def _inputs() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.rand(BATCH, BAG, generator=generator) < 0.6
    mask[:, 0] = True
    return {
        "images": torch.randn(BATCH, IN_DIM, generator=generator, dtype=torch.float64),
        "texts": torch.randn(BATCH, IN_DIM, generator=generator, dtype=torch.float64),
        "bags": torch.randn(BATCH, BAG, IN_DIM, generator=generator, dtype=torch.float64),
        "bag_mask": mask,
        "teacher": torch.randn(2, BATCH, OUT_DIM, generator=generator, dtype=torch.float64),
    }


def _clip(towers: nn.ModuleDict, x: dict[str, Tensor]) -> Tensor:
    images = F.normalize(towers["image"](x["images"]), dim=-1)
    texts = F.normalize(towers["text"](x["texts"]), dim=-1)
    return clip_loss(images, texts, towers["scale"]())


def _mil_nce(towers: nn.ModuleDict, x: dict[str, Tensor]) -> Tensor:
    video = F.normalize(towers["image"](x["images"]), dim=-1)
    bags = F.normalize(towers["text"](x["bags"]), dim=-1)
    return mil_nce_loss(video, bags, x["bag_mask"], temperature=0.1)


def _nt_xent(towers: nn.ModuleDict, x: dict[str, Tensor]) -> Tensor:
    return nt_xent_loss(towers["image"](x["images"]), towers["text"](x["texts"]), 0.2, weight=0.3)


LOSSES: dict[str, Callable[[nn.ModuleDict, dict[str, Tensor]], Tensor]] = {
    "clip": _clip,
    "mil_nce": _mil_nce,
    "nt_xent": _nt_xent,
}


def _loss_and_grads(name: str, x: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
    towers = _towers()
    loss = LOSSES[name](towers, x)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in towers.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _dino_centre(teacher: Tensor) -> Tensor:
    loss_fn = DINOLoss(OUT_DIM, center_momentum=0.5).double()
    students = [view.clone() for view in teacher] + [teacher[0] * 2]
    loss_fn(students, list(teacher))
    return loss_fn.center.clone()


def _worker(rank: int, port: int, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        rows = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
        full = _inputs()
        local = {k: v[rows] for k, v in full.items() if k != "teacher"}
        result: dict[str, object] = {"rank": distributed.rank(), "world": distributed.world_size()}
        for name in LOSSES:
            loss, grads = _loss_and_grads(name, local)
            for grad in grads.values():
                dist.all_reduce(grad)
                grad /= WORLD
            result[name] = {
                "loss": loss,
                "mean_loss": distributed.all_reduce_sum(loss) / WORLD,
                "grads": grads,
            }
        result["dino_centre"] = _dino_centre(full["teacher"][:, rows])
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def test_helpers_are_identities_without_a_process_group() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.gather_with_grad(x) is x
    assert torch.equal(distributed.gather(x), x)
    assert torch.equal(distributed.all_reduce_sum(x), x)


def test_ranks_see_the_process_group(rank_results: list[dict]) -> None:
    assert [(r["rank"], r["world"]) for r in rank_results] == [(0, 2), (1, 2)]


@pytest.mark.parametrize("name", list(LOSSES))
def test_two_ranks_reproduce_the_single_process_loss_and_gradients(
    name: str, rank_results: list[dict]
) -> None:
    expected_loss, expected_grads = _loss_and_grads(name, _inputs())
    local_losses = [float(r[name]["loss"]) for r in rank_results]
    assert sum(local_losses) / WORLD == pytest.approx(float(expected_loss), rel=1e-10)
    for result in rank_results:
        assert float(result[name]["mean_loss"]) == pytest.approx(float(expected_loss), rel=1e-10)
        assert result[name]["grads"].keys() == expected_grads.keys()
        for key, grad in result[name]["grads"].items():
            torch.testing.assert_close(grad, expected_grads[key], atol=1e-10, rtol=1e-8, msg=key)


def test_each_rank_holds_its_share_of_the_clip_loss(rank_results: list[dict]) -> None:
    """Rank r's loss is the full-batch loss restricted to its own rows (labels offset by rank)."""
    x = _inputs()
    towers = _towers()
    with torch.no_grad():
        images = F.normalize(towers["image"](x["images"]), dim=-1)
        texts = F.normalize(towers["text"](x["texts"]), dim=-1)
        logits = towers["scale"]() * images @ texts.T
    labels = torch.arange(BATCH)
    half = BATCH // WORLD
    for rank, result in enumerate(rank_results):
        rows = slice(rank * half, (rank + 1) * half)
        share = (
            F.cross_entropy(logits[rows], labels[rows])
            + F.cross_entropy(logits.T[rows], labels[rows])
        ) / 2
        assert float(result["clip"]["loss"]) == pytest.approx(float(share), rel=1e-10)


def test_dino_centre_is_averaged_over_ranks(rank_results: list[dict]) -> None:
    expected = _dino_centre(_inputs()["teacher"])
    for result in rank_results:
        torch.testing.assert_close(result["dino_centre"], expected, atol=1e-12, rtol=1e-10)
