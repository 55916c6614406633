"""Merging fine-tunes of one base: the arithmetic of each method, and the lineage checks."""

from __future__ import annotations

import json
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


def colour_models(tmp_path: Path) -> tuple[Path, Path]:
    """Two full fine-tunes of one ColourSystem base: a's task vector halves the green channel's
    weight, b's raises the blue one by a fifth. Merged with λ the mix is diag(1, 1 - λ/2, 1 + λ/5),
    so a tile is called green when (1 - λ/2)·g beats its red and blue: λ picks the winners."""
    from tests.plugins.colours import ColourSystem

    base = save_checkpoint(ColourSystem(), tmp_path / "base.ckpt")
    paths = []
    for name, index, weight in (("a", 1, 0.5), ("b", 2, 1.2)):
        system = ColourSystem(peft={"base": str(base), "method": "full"})
        system.configure_model()
        with torch.no_grad():
            system.mix.weight[index, index] = weight
        paths.append(save_checkpoint(system, tmp_path / f"{name}.ckpt"))
    return paths[0], paths[1]


def test_merge_sweeps_scales_on_every_domain_and_keeps_the_best(
    tmp_path: Path, capsys, colours_domain, toy_plugin
):
    from tests.helpers import colour_png

    a, b = colour_models(tmp_path)
    # colours (its own zeroshot_data hook): the greenish red tile needs 1 - λ/2 < 0.75, the
    # green one 1 - λ/2 > 0.45. toy (class folders): its green tile needs 1 - λ/2 > 0.55.
    tiles = {
        tmp_path / "colours" / "val": {"red_0": (150, 200, 0), "green_0": (100, 220, 0)},
        tmp_path / "toy" / "val": {"red/0": (255, 0, 0), "green/0": (110, 200, 0)},
    }
    for folder, colours in tiles.items():
        blue = "blue_0" if folder.parent.name == "colours" else "blue/0"
        for name, rgb in {**colours, blue: (0, 0, 255)}.items():
            colour_png(folder / f"{name}.png", rgb)
    scales = [0.25, 0.75, 1.0, 1.5]
    code, out, err = run_cli(
        capsys, "merge", a, b, "--out", tmp_path / "m.ckpt", "--scales",
        ",".join(map(str, scales)), "--select-on", f"colours={tmp_path / 'colours'}",
        "--select-on", f"toy={tmp_path / 'toy'}",
    )  # fmt: skip
    assert code == 0, err
    rows = [line.split() for line in out if line.split()[0][0].isdigit()]
    assert [float(row[0]) for row in rows] == scales
    printed = {float(row[0]): [float(v) for v in row[1:4]] for row in rows}
    expected = {0.25: [2 / 3, 1, 5 / 6], 0.75: [1, 1, 1], 1.0: [1, 2 / 3, 5 / 6]}
    expected[1.5] = [2 / 3, 2 / 3, 2 / 3]
    for scale, values in expected.items():
        assert printed[scale] == pytest.approx(values, abs=1e-4)
    best = max(printed, key=lambda scale: printed[scale][2])
    assert best == 0.75 and [row for row in rows if "chosen" in " ".join(row)][0][0] == "0.75"

    lineage = read_checkpoint(tmp_path / "m.ckpt")[CHECKPOINT_KEY]["lineage"]
    assert lineage["scale"] == best
    sweep = lineage["scale_sweep"]
    assert sweep["split"] == "val" and sweep["metric"] == "acc1"
    assert sweep["select_on"] == {
        d: {"domain": d, "root": str(tmp_path / d)} for d in ("colours", "toy")
    }
    assert [row["scale"] for row in sweep["accuracies"]] == scales
    assert sweep["accuracies"][1] == {"scale": 0.75, "colours": 1.0, "toy": 1.0}
    merged = read_checkpoint(tmp_path / "m.ckpt")["state_dict"]["mix.weight"]
    torch.testing.assert_close(merged, torch.diag(torch.tensor([1.0, 1 - 0.75 / 2, 1.15])))

    # The written model scores what the sweep printed for it, through eval zeroshot.
    code, _, err = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", tmp_path / "m.ckpt", "--domain", "colours",
        "--data", tmp_path / "colours", "--split", "val", "--out", tmp_path / "eval.json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "eval.json").read_text())["acc1"] == 1.0


def test_merge_sweep_takes_two_held_out_sets_of_one_domain(tmp_path: Path, capsys, colours_domain):
    from tests.helpers import colour_png

    a, b = colour_models(tmp_path)
    # With λ = 1 the mix halves green: the greenish red tile is red, the plain green one green.
    for root, red in (("one", (150, 200, 0)), ("two", (255, 0, 0))):
        colour_png(tmp_path / root / "val" / "red_0.png", red)
        colour_png(tmp_path / root / "val" / "green_0.png", (0, 255, 0))
    sets = [f"colours={tmp_path / root}" for root in ("one", "two")]
    code, out, err = run_cli(
        capsys, "merge", a, b, "--out", tmp_path / "m.ckpt", "--scales", "0,1",
        "--select-on", sets[0], "--select-on", sets[1],
    )  # fmt: skip
    assert code == 0, err
    assert out[0].split()[1:] == [*sets, "mean"]
    sweep = read_checkpoint(tmp_path / "m.ckpt")[CHECKPOINT_KEY]["lineage"]["scale_sweep"]
    assert sweep["accuracies"] == [
        {"scale": 0.0, sets[0]: 0.5, sets[1]: 1.0},
        {"scale": 1.0, sets[0]: 1.0, sets[1]: 1.0},
    ]
    assert sweep["select_on"][sets[1]] == {"domain": "colours", "root": str(tmp_path / "two")}


def test_merge_sweep_refuses_half_a_request(tmp_path: Path, capsys):
    a, b = colour_models(tmp_path)
    code, _, err = run_cli(capsys, "merge", a, b, "--out", tmp_path / "m.ckpt", "--scales", "1,2")
    assert code == 1 and "--select-on" in err
    select = ["--select-on", f"colours={tmp_path / 'missing'}"]
    code, _, err = run_cli(capsys, "merge", a, b, "--out", tmp_path / "m.ckpt", "--scales", "1",
                           *select)  # fmt: skip
    assert code == 1 and "does not exist" in err and str(tmp_path / "missing") in err
    code, _, err = run_cli(capsys, "merge", a, b, "--out", tmp_path / "m.ckpt", "--method",
                           "average", "--scales", "1", "--select-on", f"x={tmp_path}")  # fmt: skip
    assert code == 1 and "average" in err and not (tmp_path / "m.ckpt").exists()


def test_medical_lora_specialists_with_a_trained_head_merge_to_base_plus_both(tmp_path: Path):
    """Two LoRA fine-tunes of one M3AE base (fusion attention + the ITM head training fully),
    merged by task arithmetic: base + λ·Σ((α/r)·B·A) on each wrapped weight, base + λ·Σ Δhead."""
    from domainvlm.core.merging import load_for_merge
    from domainvlm.domains.medical.system import M3AEPretrainSystem

    def m3ae(peft: dict | None = None, seed: int = 0) -> M3AEPretrainSystem:
        torch.manual_seed(seed)
        system = M3AEPretrainSystem(vision_depth=1, text_depth=1, fusion_layers=1, peft=peft)
        system.configure_model()
        return system.eval()

    base = save_checkpoint(m3ae(seed=1), tmp_path / "base.ckpt")
    peft = {
        "base": str(base), "r": 2, "alpha": 6, "options": {"init_lora_weights": False},
        "target_modules": [r"backbone\.fusion\.\d+\.(image|text)\.cross_attention"],
        "trainable": [r"itm_head\..*"],
    }  # fmt: skip
    key = "backbone.fusion.0.image.cross_attention"
    deltas, heads, paths = [], [], []
    for seed in (2, 3):
        system = m3ae(peft, seed)
        with torch.no_grad():
            system.itm_head.weight.add_(0.1 * seed)
        wrapped = system.get_submodule(key)
        deltas.append(3.0 * wrapped.lora_B["default"].weight @ wrapped.lora_A["default"].weight)
        heads.append(system.itm_head.weight.detach().clone())
        paths.append(save_checkpoint(system, tmp_path / f"s{seed}.ckpt"))
    assert all(path.stat().st_size < base.stat().st_size / 10 for path in paths)
    lineage, base_state, states = load_for_merge(paths)
    assert lineage["base"] == str(base.resolve())
    merged = merge_states(base_state, states, "task-arithmetic", scale=0.5)
    torch.testing.assert_close(
        merged[f"{key}.in_proj_weight"],
        base_state[f"{key}.in_proj_weight"] + 0.5 * (deltas[0] + deltas[1]),
        rtol=0, atol=1e-6,
    )  # fmt: skip
    head = base_state["itm_head.weight"]
    expected = head + 0.5 * ((heads[0] - head) + (heads[1] - head))
    torch.testing.assert_close(merged["itm_head.weight"], expected, rtol=0, atol=1e-6)
    untouched = "backbone.fusion.0.text.self_attention.in_proj_weight"
    assert torch.equal(merged[untouched], base_state[untouched])
    m3ae().load_state_dict(merged)  # a plain system takes the merged weights as they are
