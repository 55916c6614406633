"""Merging fine-tunes of one base: the arithmetic of each method, and the lineage checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from domainvlm.core.adapters import merge_adapters
from domainvlm.core.checkpoint import load_system, read_checkpoint
from domainvlm.core.merging import MergeError, merge_states
from domainvlm.core.system import CHECKPOINT_KEY
from domainvlm.domains.remote_sensing.system import RSMCLIP

from tests.helpers import run_cli, save_checkpoint

BASE = {"w": torch.zeros(4), "steps": torch.tensor(7)}
TASKS = [
    {"w": torch.tensor([1.0, -2.0, 3.0, 0.1]), "steps": torch.tensor(9)},
    {"w": torch.tensor([1.5, 2.0, -1.0, 0.2]), "steps": torch.tensor(8)},
]


@pytest.mark.parametrize(
    ("method", "scale", "expected"),
    [
        ("task-arithmetic", 0.5, [1.25, 0.0, 1.0, 0.15]),
        ("average", 1.0, [1.25, 0.0, 1.0, 0.15]),
        # density 0.5 keeps (-2, 3) and (1.5, 2); -2 and 2 cancel, so that weight's sign is 0.
        ("ties", 1.0, [1.5, 0.0, 3.0, 0.0]),
        ("dare", 1.0, None),
    ],
)
def test_merge_methods_on_hand_computed_vectors(method, scale, expected):
    merged = merge_states(BASE, TASKS, method, scale=scale, density=0.5, seed=1)
    assert merged["steps"] == 7  # not a float: taken from the base
    if expected is not None:
        torch.testing.assert_close(merged["w"], torch.tensor(expected))
        return
    # DARE: each entry is a sum over tasks of 0 or 2·τ (kept entries rescaled by 1/density).
    options = [{0.0, 2 * a} for a in TASKS[0]["w"].tolist()]
    for value, first, second in zip(
        merged["w"].tolist(), options, TASKS[1]["w"].tolist(), strict=True
    ):
        assert any(abs(value - (f + s)) < 1e-6 for f in first for s in (0.0, 2 * second))
    full = merge_states(BASE, TASKS, "dare", density=1.0)
    torch.testing.assert_close(full["w"], TASKS[0]["w"] + TASKS[1]["w"])


def tiny(peft: dict | None = None, seed: int = 0) -> RSMCLIP:
    torch.manual_seed(seed)
    system = RSMCLIP(distill_weight=0.0, peft=peft)
    system.configure_model()
    return system.eval()


def test_merge_command_adds_both_task_vectors_and_refuses_another_base(tmp_path: Path, capsys):
    base = save_checkpoint(tiny(seed=1), tmp_path / "base.ckpt")
    other_base = save_checkpoint(tiny(seed=2), tmp_path / "other.ckpt")
    lora = {"base": str(base), "r": 2, "options": {"init_lora_weights": False}}
    a = save_checkpoint(tiny(lora, seed=3), tmp_path / "a.ckpt")
    b = save_checkpoint(tiny({**lora, "method": "full"}, seed=4), tmp_path / "b.ckpt")
    code, _, err = run_cli(capsys, "merge", a, b, "--scale", "0.5", "--out", tmp_path / "m.ckpt")
    assert code == 0, err
    merged = read_checkpoint(tmp_path / "m.ckpt")
    assert merged[CHECKPOINT_KEY]["lineage"]["method"] == "task-arithmetic"
    base_state = read_checkpoint(base)["state_dict"]
    adapted = load_system(a)
    merge_adapters(adapted)
    key = "model.transformer.resblocks.0.attn.in_proj_weight"
    tau = adapted.state_dict()[key] - base_state[key]
    assert tau.abs().max() > 0
    # b (method full, untrained) equals the base: its task vector is zero.
    torch.testing.assert_close(merged["state_dict"][key], base_state[key] + 0.5 * tau)
    assert isinstance(load_system(tmp_path / "m.ckpt"), RSMCLIP)

    stranger = save_checkpoint(tiny({**lora, "base": str(other_base)}, seed=3), tmp_path / "c.ckpt")
    code, _, err = run_cli(capsys, "merge", a, stranger, "--out", tmp_path / "x.ckpt")
    assert code == 1 and "same base" in err and not (tmp_path / "x.ckpt").exists()
    code, _, err = run_cli(capsys, "merge", a, base, "--out", tmp_path / "x.ckpt")
    assert code == 1 and "records no base" in err


def test_merge_refuses_bad_settings():
    with pytest.raises(MergeError, match="density"):
        merge_states(BASE, TASKS, "ties", density=0.0)
