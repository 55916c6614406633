"""LoRA through peft on both open_clip towers: targets, merge arithmetic, adapter files, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from domainvlm.core.adapters import (
    AdapterError,
    adapted_modules,
    merge_adapters,
    state_sha256,
)
from domainvlm.core.checkpoint import load_system, read_checkpoint
from domainvlm.core.errors import CheckpointError
from domainvlm.core.system import CHECKPOINT_KEY
from domainvlm.domains.remote_sensing.system import RSMCLIP
from peft.tuners.lora import layer as lora

from tests.helpers import colour_png, run_cli, save_checkpoint

ATTENTION = r"model\.(visual\.)?transformer\.resblocks\.\d+\.attn"
MLP = r"model\.(visual\.)?transformer\.resblocks\.\d+\.mlp\.c_fc"
# B starts random instead of zero, so every delta is non-zero from the start.
RANDOM_B = {"init_lora_weights": False}


def tiny(peft: dict | None = None, seed: int = 0) -> RSMCLIP:
    torch.manual_seed(seed)
    system = RSMCLIP(distill_weight=0.0, peft=peft)
    system.configure_model()
    return system.eval()


def outputs(system: RSMCLIP) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    with torch.no_grad():
        return system.encode_image(images), system.encode_text(["a field", "a harbour"])


def test_anchored_targets_wrap_attention_of_both_towers_only():
    system = tiny({"r": 4, "trainable": [r"logit_scale\..*"]})
    names = [name for name, _ in adapted_modules(system)]
    assert len(names) == 8  # 4 blocks per tower; the MHA's own out_proj wrapper is not listed
    assert sum(n.startswith("model.visual.") for n in names) == 4
    assert all(isinstance(m, lora.MultiheadAttention) for _, m in adapted_modules(system))
    trainable = [n for n, p in system.named_parameters() if p.requires_grad]
    assert all("lora_" in n or n.startswith("logit_scale.") for n in trainable)
    assert any(n.startswith("logit_scale.") for n in trainable)
    # 2 LoRA pairs (fused qkv, out_proj) per block: r·(128 + 3·128) + r·(128 + 128)
    lora_count = sum(p.numel() for n, p in system.named_parameters() if "lora_" in n)
    assert lora_count == 8 * 4 * (128 + 384 + 128 + 128)
    # peft merges around every forward; the stored weights must come back bit for bit.
    before = {k: v.clone() for k, v in system.state_dict().items()}
    outputs(system)
    assert all(torch.equal(before[k], v) for k, v in system.state_dict().items())


def test_bad_peft_blocks_are_clear_errors():
    with pytest.raises(AdapterError, match="match no module"):
        tiny({"target_modules": ["attn"]})  # a bare suffix is a whole name: it matches nothing
    with pytest.raises(AdapterError, match="unknown settings"):
        tiny({"rank": 4})
    with pytest.raises(AdapterError, match="peft.method"):
        tiny({"method": "prefix"})
    with pytest.raises(AdapterError, match="EMA teacher"):
        RSMCLIP(distill_weight=0.5, dino_out_dim=16, peft={}).configure_model()


@pytest.mark.parametrize("targets", [[ATTENTION, MLP]])
def test_merged_weights_are_w_plus_scaled_ba_and_outputs_do_not_change(targets):
    system = tiny({"r": 4, "alpha": 12, "target_modules": targets, "options": RANDOM_B})
    base = tiny(seed=0)
    scale = 12 / 4
    expected = {}
    for name, module in adapted_modules(system):

        def delta(layer):
            return scale * layer.lora_B["default"].weight @ layer.lora_A["default"].weight

        plain = base.get_submodule(name)
        if isinstance(module, lora.MultiheadAttention):
            out = module.get_base_layer().out_proj
            expected[f"{name}.in_proj_weight"] = plain.in_proj_weight + delta(module)
            expected[f"{name}.out_proj.weight"] = plain.out_proj.weight + delta(out)
        else:
            expected[f"{name}.weight"] = plain.weight + delta(module)
    assert len(expected) == 8 * 2 + 8
    before = outputs(system)
    assert merge_adapters(system) == 16
    state = system.state_dict()
    assert not any("lora_" in key or "base_layer" in key for key in state)
    assert set(state) == set(base.state_dict())
    for key, weight in expected.items():
        torch.testing.assert_close(state[key], weight.detach(), rtol=0, atol=1e-6)
    after = outputs(system)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The same hand-built weights in a plain model give the adapted outputs too.
    base.load_state_dict({**base.state_dict(), **expected})
    for a, b in zip(before, outputs(base), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_adapter_file_loads_on_its_base_and_refuses_another(tmp_path: Path):
    base_path = save_checkpoint(tiny(seed=3), tmp_path / "base.ckpt")
    adapted = tiny({"base": str(base_path), "r": 2, "options": RANDOM_B}, seed=5)
    adapter_path = save_checkpoint(adapted, tmp_path / "adapter.ckpt")
    info = read_checkpoint(adapter_path)[CHECKPOINT_KEY]
    base_state = read_checkpoint(base_path)["state_dict"]
    assert info["adapter"] and info["lineage"]["base_sha256"] == state_sha256(base_state)
    assert adapter_path.stat().st_size < base_path.stat().st_size / 4
    loaded = load_system(adapter_path)
    for a, b in zip(outputs(adapted), outputs(loaded), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    save_checkpoint(tiny(seed=4), base_path)  # another base under the same name
    with pytest.raises(CheckpointError, match="sha256"):
        load_system(adapter_path)


def test_export_merge_and_zeroshot_take_adapter_files(tmp_path: Path, capsys):
    base_path = save_checkpoint(tiny(seed=3), tmp_path / "base.ckpt")
    adapted = tiny({"base": str(base_path), "r": 2, "options": RANDOM_B}, seed=5)
    adapter_path = save_checkpoint(adapted, tmp_path / "adapter.ckpt")
    merged_path = tmp_path / "merged.ckpt"
    code, _, _ = run_cli(capsys, "export", adapter_path, "--merge", "--out", merged_path)
    assert code == 0
    info = read_checkpoint(merged_path)[CHECKPOINT_KEY]
    assert "peft" not in info["init_args"] and info["lineage"]["merged_adapters"] == 8
    merged = load_system(merged_path)
    for a, b in zip(outputs(adapted), outputs(merged), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    standalone = tmp_path / "standalone.ckpt"
    code, _, _ = run_cli(capsys, "export", adapter_path, "--out", standalone)
    assert code == 0 and read_checkpoint(standalone)[CHECKPOINT_KEY]["init_args"]["peft"]["r"] == 2
    moved = base_path.rename(tmp_path / "moved.ckpt")  # the stand-alone file needs no base
    for a, b in zip(outputs(adapted), outputs(load_system(standalone)), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    moved.rename(base_path)
    image = colour_png(tmp_path / "a.png", (200, 30, 30), size=64)
    answers = []
    for checkpoint in (adapter_path, merged_path):
        code, lines, _ = run_cli(
            capsys, "zeroshot", "--checkpoint", checkpoint, "--classes", "field,harbour,forest",
            image,
        )  # fmt: skip
        assert code == 0
        answers.append(json.loads(lines[0]))
    assert answers[0]["label"] == answers[1]["label"]
    assert answers[0]["probability"] == pytest.approx(answers[1]["probability"], abs=1e-4)


def test_fit_trains_only_the_adapter_and_writes_an_adapter_file(tmp_path: Path):
    import lightning as L

    base_path = save_checkpoint(tiny(seed=3), tmp_path / "base.ckpt")
    torch.manual_seed(0)
    system = RSMCLIP(distill_weight=0.0, lr=1e-2, warmup=0, peft={"base": str(base_path), "r": 2})
    texts = ["a field", "a harbour", "a forest", "a river"]
    batches = [{"image": torch.randn(4, 3, 64, 64), "text": texts} for _ in range(3)]
    trainer = L.Trainer(
        max_steps=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(system, torch.utils.data.DataLoader(batches, batch_size=None))
    written = next((tmp_path / "checkpoints").glob("*.ckpt"))
    state = read_checkpoint(written)["state_dict"]
    base_state = read_checkpoint(base_path)["state_dict"]
    lora_keys = [key for key in state if "lora_" in key]
    assert len(lora_keys) == 32 and all(not torch.equal(state[k], 0 * state[k]) for k in lora_keys)
    assert not any(
        key in base_state for key in state if "lora_" not in key and key.endswith("weight")
    )
    resumed = RSMCLIP(distill_weight=0.0, lr=1e-2, warmup=0, peft={"base": str(base_path), "r": 2})
    trainer = L.Trainer(
        max_steps=4, default_root_dir=tmp_path / "resumed", logger=False, accelerator="cpu",
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(resumed, torch.utils.data.DataLoader(batches, batch_size=None), ckpt_path=written)
    assert trainer.global_step == 4  # resumed at step 3 from the adapter-only file
    loaded = load_system(written)
    frozen = loaded.model.visual.transformer.resblocks[0].attn.base_layer.in_proj_weight
    torch.testing.assert_close(
        frozen, base_state["model.visual.transformer.resblocks.0.attn.in_proj_weight"]
    )


@pytest.mark.parametrize(
    ("method", "options"),
    [("loha", {"init_weights": False}), ("lokr", {"init_weights": False}), ("ia3", {})],
)
def test_other_peft_methods_adapt_and_merge_linear_layers(method, options):
    system = tiny({"method": method, "target_modules": [MLP], "options": options})
    if method == "ia3":  # IA3 starts at the identity scaling: move it off so the test can fail
        for name, param in system.named_parameters():
            if "ia3_l" in name:
                param.data.uniform_(0.5, 1.5)
    base = outputs(tiny(seed=0))
    before = outputs(system)
    assert not torch.allclose(before[0], base[0], atol=1e-4)
    assert merge_adapters(system) == 8
    for a, b in zip(before, outputs(system), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_kb_build_and_search_take_an_adapter_file(tmp_path: Path, capsys):
    from domainvlm.core.encoder_loader import load_encoder

    base_path = save_checkpoint(tiny(seed=3), tmp_path / "base.ckpt")
    adapted = tiny({"base": str(base_path), "r": 2, "options": RANDOM_B}, seed=5)
    adapter_path = save_checkpoint(adapted, tmp_path / "adapter.ckpt")
    rows = [{"text": text} for text in ("a river", "a dense forest", "an industrial area")]
    (tmp_path / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    kb = tmp_path / "kb"
    code, lines, err = run_cli(
        capsys, "kb", "build", "--jsonl", tmp_path / "items.jsonl", "--checkpoint", adapter_path,
        "--out", kb,
    )  # fmt: skip
    assert code == 0 and json.loads(lines[0])["count"] == 3, err
    code, lines, err = run_cli(capsys, "kb", "search", kb, "--text", "a dense forest", "-k", "1")
    assert code == 0 and json.loads(lines[0])["record"]["text"] == "a dense forest", err
    code, lines, _ = run_cli(capsys, "kb", "info", kb)
    identity = json.loads("\n".join(lines))["encoder"]
    assert identity["sha256"] == load_encoder(str(adapter_path)).identity()["sha256"]
    assert identity["sha256"] != load_encoder(str(base_path)).identity()["sha256"]


def test_lora_on_our_own_towers_and_fusion_with_a_trainable_head():
    from domainvlm.domains.medical.system import M3AEVQASystem

    towers = (
        r"backbone\.(vision\.visual\.transformer\.resblocks\.\d+\.attn"
        r"|text\.blocks\.\d+\.self_attn|fusion\.\d+\.(image|text)\.(self|cross)_attention)"
    )
    torch.manual_seed(0)
    peft = {"target_modules": [towers], "trainable": [r"head\..*"], "options": RANDOM_B}
    system = M3AEVQASystem(classes=["yes", "no", "left"], peft=peft).eval()
    system.configure_model()
    wrapped = [name for name, _ in adapted_modules(system)]
    assert (
        len(wrapped) == 4 + 2 + 2 * 2 * 2
    )  # ViT blocks, text blocks, fusion self+cross per stream
    trainable = {n.split(".")[0] for n, p in system.named_parameters() if p.requires_grad}
    assert trainable == {"backbone", "head"}
    assert all("lora_" in n for n, p in system.backbone.named_parameters() if p.requires_grad)
    images = torch.linspace(-1, 1, 2 * 3 * 64 * 64).reshape(2, 3, 64, 64)
    with torch.no_grad():
        before = system(images, ["is there a lesion?", "which side?"])
        merge_adapters(system)
        after = system(images, ["is there a lesion?", "which side?"])
    torch.testing.assert_close(before, after, rtol=1e-5, atol=1e-5)
