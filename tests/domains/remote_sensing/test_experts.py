from __future__ import annotations

from pathlib import Path

import pytest
import torch
from domainvlm.core.errors import DomainVLMError
from domainvlm.domains.remote_sensing.datamodule import RSSceneDataModule, RSVQADataModule
from domainvlm.domains.remote_sensing.knowledge import load_concepts
from domainvlm.domains.remote_sensing.model import SemanticExpert, SemanticExperts
from domainvlm.domains.remote_sensing.open_vocabulary import mention_vectors
from domainvlm.domains.remote_sensing.system import RSMCLIP, SemanticExpertsSystem
from domainvlm.domains.remote_sensing.templates import templates

# every knowledge entry is embedded at set-up: a small base keeps the tests fast
KEPT = (
    "forest",
    "river",
    "sea_lake",
    "industrial_area",
    "ship",
    "harbor",
    "bridge",
    "storage_tank",
)
SMALL_KB = [c.id for c in load_concepts() if c.id not in KEPT]
"""``knowledge_exclude`` for a base of four scene and four object concepts."""


@pytest.fixture(scope="module")
def sample_root(rs_sample) -> Path:
    return rs_sample


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory) -> Path:
    system = RSMCLIP(in_chans=4, distill_weight=0.0)
    checkpoint = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(checkpoint)
    path = tmp_path_factory.mktemp("clip") / "clip.ckpt"
    torch.save(checkpoint, path)
    return path


def make_system(clip_checkpoint: Path, datamodule, **kwargs) -> SemanticExpertsSystem:
    kwargs.setdefault("knowledge_exclude", SMALL_KB)
    system = SemanticExpertsSystem(
        init_from=str(clip_checkpoint),
        in_chans=4,
        k_object=3,
        k_scene=2,
        dim=32,
        **kwargs,
    )
    trainer = type("T", (), {"datamodule": datamodule})()
    system._trainer = trainer  # setup only reads trainer.datamodule
    system.setup("fit")
    return system


def variant(system: SemanticExpertsSystem, **changes) -> SemanticExpertsSystem:
    """The same weights (towers, knowledge and class vectors included) with other options,
    without embedding anything again."""
    other = SemanticExpertsSystem(**{**system.hparams, **changes})
    wanted = other.state_dict()
    given = {k: v for k, v in system.state_dict().items() if k in wanted}
    if other.hparams.head != system.hparams.head:  # a fresh head of the other kind
        given = {k: v for k, v in given.items() if not k.startswith("head.")}
    missing, _ = other.load_state_dict(given, strict=False)
    assert all(key.startswith("head.") or key == "cue_weights" for key in missing)
    return other


@pytest.fixture(scope="module")
def scene_batch(sample_root):
    datamodule = RSSceneDataModule(root=str(sample_root), bands=[3, 2, 1, 4], batch_size=4)
    datamodule.setup("fit")
    return datamodule, next(iter(datamodule.train_dataloader()))


@pytest.fixture(scope="module")
def joint_system(clip_checkpoint, scene_batch) -> SemanticExpertsSystem:
    return make_system(clip_checkpoint, scene_batch[0], head="joint").eval()


def test_expert_with_one_memory_token_is_its_value_path_plus_feed_forward():
    """One memory token gets all the attention, so the expert reduces to a hand computation."""
    torch.manual_seed(0)
    expert = SemanticExpert(16, heads=2)
    query, memory = torch.randn(2, 16), torch.randn(2, 1, 16)
    attention = expert.cross_attention
    w_v = attention.in_proj_weight[32:]
    b_v = attention.in_proj_bias[32:]
    value = expert.norm_cues(memory[:, 0]) @ w_v.T + b_v
    attended = attention.out_proj(value)
    expected = query + attended
    expected = expected + expert.mlp(expert.norm_mlp(expected))
    assert torch.allclose(expert(query, memory), expected, atol=1e-6)


def test_experts_without_cues_still_read_the_image():
    """The ablation removes knowledge only: patch tokens and the global embedding still count."""
    torch.manual_seed(0)
    experts = SemanticExperts(joint_dim=8, visual_dim=12, dim=16, heads=2)
    query, embedding = torch.randn(2, 8), torch.randn(2, 8)
    patches = torch.randn(2, 4, 12)
    base, _ = experts(query, embedding, patches, None)
    moved, _ = experts(query, embedding, patches + torch.randn(2, 4, 12), None)
    assert not torch.allclose(base, moved)
    cues = {level: (torch.randn(2, 3, 8), torch.rand(2, 3)) for level in ("object", "scene")}
    with_cues, _ = experts(query, embedding, patches, cues)
    assert not torch.allclose(base, with_cues)


def test_gate_weights_are_a_distribution_and_mix_the_experts():
    experts = SemanticExperts(joint_dim=8, visual_dim=12, dim=16, heads=2)
    cues = {level: (torch.randn(2, 3, 8), torch.rand(2, 3)) for level in ("object", "scene")}
    features, gate = experts(torch.randn(2, 8), torch.randn(2, 8), torch.randn(2, 4, 12), cues)
    assert features.shape == (2, 32) and gate.shape == (2, 2)
    assert torch.allclose(gate.sum(-1), torch.ones(2))


def test_retrieval_returns_the_exact_top_k_of_the_right_level(clip_checkpoint, scene_batch):
    system = make_system(clip_checkpoint, scene_batch[0])
    assert system.knowledge_vectors.abs().sum() > 0  # embedded with the loaded text tower
    queries = torch.nn.functional.normalize(
        torch.randn(3, system.knowledge_vectors.shape[1]), dim=-1
    )
    vectors, scores = system.retrieve(queries, "scene", k=2, per_image=1)
    levels = [r["level"] for r in system.records]
    scene_rows = torch.tensor([i for i, level in enumerate(levels) if level == "scene"])
    exact = queries @ system.knowledge_vectors[scene_rows].T
    top = exact.topk(2, dim=1)
    assert torch.allclose(scores, top.values, atol=1e-5)
    assert torch.allclose(vectors, system.knowledge_vectors[scene_rows[top.indices]], atol=1e-6)


def test_scene_and_vqa_steps_train_only_the_new_modules(sample_root, joint_system, scene_batch):
    vqa = RSVQADataModule(root=str(sample_root), bands=[3, 2, 1, 4], batch_size=4)
    vqa.setup("fit")
    assert joint_system.hparams.classes == scene_batch[0].classes()  # set-up sized the head
    for task, datamodule, batch in (
        ("scene", scene_batch[0], scene_batch[1]),
        ("vqa", vqa, next(iter(vqa.train_dataloader()))),
    ):
        classes = datamodule.classes()
        system = variant(joint_system, task=task, head="classifier", classes=classes).train()
        logged: list[str] = []
        system.log = lambda name, *args, record=logged, **kwargs: record.append(name)
        losses = system.compute_losses(batch, "train")
        expected = {f"train/acc_{kind}" for kind in batch.get("type", [])}
        assert set(logged) == expected  # per question type for VQA, nothing extra for scenes
        losses["loss"].backward()
        assert all(p.grad is None for p in system.clip.parameters())
        assert system.head.layers[0].weight.grad is not None
        assert 0.0 <= float(losses["acc"]) <= 1.0


def test_ablation_switch_changes_only_the_cues(joint_system, scene_batch):
    batch = scene_batch[1]
    with_knowledge = variant(joint_system, head="classifier")
    without = variant(with_knowledge, use_retrieval=False)
    on, _ = with_knowledge(batch["image"], ["q"] * 4)
    off, _ = without(batch["image"], ["q"] * 4)
    assert on.shape == off.shape and not torch.allclose(on, off)


def test_knowledge_is_embedded_as_prompt_ensembles_or_descriptions(clip_checkpoint, scene_batch):
    datamodule = scene_batch[0]
    normalize = torch.nn.functional.normalize
    system = make_system(clip_checkpoint, datamodule, knowledge_languages=["en", "de"])
    for row in (0, len(system.records) - 1):
        record = system.records[row]
        prompts = [template.format(record["name"]) for template in templates(record["lang"])]
        with torch.no_grad():
            expected = normalize(normalize(system.encode_text(prompts), dim=-1).mean(0), dim=0)
        assert torch.allclose(system.knowledge_vectors[row], expected, atol=1e-5)
    system = make_system(clip_checkpoint, datamodule, knowledge_prompts="descriptions")
    with torch.no_grad():
        expected = normalize(system.encode_text([system.records[0]["text"]]), dim=-1)[0]
    assert ":" in system.records[0]["text"]
    assert torch.allclose(system.knowledge_vectors[0], expected, atol=1e-5)
    system = make_system(clip_checkpoint, datamodule, knowledge_prompts="mentions")
    assert torch.allclose(
        system.knowledge_vectors, mention_vectors(system._text_encoder(), system.records)
    )
    with pytest.raises(ValueError, match="knowledge_prompts"):
        make_system(clip_checkpoint, datamodule, knowledge_prompts="names")


def test_vqa_accuracy_is_logged_per_question_type(joint_system):
    system = variant(joint_system, task="vqa", head="classifier", classes=["yes", "no"])
    logged = {}
    system.log = lambda name, value, batch_size, **_: logged.__setitem__(
        name, (float(value), batch_size)
    )
    correct = torch.tensor([True, False, True, True])
    system._log_accuracy_by_type(correct, ["count", "count", "presence", "count"], "val")
    assert logged == {"val/acc_count": (pytest.approx(2 / 3), 3), "val/acc_presence": (1.0, 1)}


def test_a_vqa_system_on_scene_data_says_which_pairing_is_wrong(joint_system, scene_batch):
    system = variant(joint_system, task="vqa", head="classifier", classes=["yes", "no"])
    with pytest.raises(DomainVLMError, match="task='vqa'.*no 'question'"):
        system.compute_losses(scene_batch[1], "test")


def test_joint_head_starts_as_the_zero_shot_classifier_in_both_arms(joint_system, scene_batch):
    """The fair prior: retrieval on and off give the towers' zero-shot logits until trained."""
    images = scene_batch[1]["image"]
    normalize = torch.nn.functional.normalize
    with torch.no_grad():
        image = normalize(joint_system.clip.encode_image(images), dim=-1)
        prompts = [template.format("annual cropland") for template in templates("en")]
        first = normalize(normalize(joint_system.encode_text(prompts), dim=-1).mean(0), dim=0)
    assert torch.allclose(joint_system.class_vectors[0], first, atol=1e-5)
    expected = 100 * image @ joint_system.class_vectors.T
    off = variant(joint_system, use_retrieval=False).eval()
    for system in (joint_system, off):
        logits, _ = system(images, ["q"] * len(images))
        assert torch.allclose(logits, expected, atol=1e-4)
    torch.nn.init.normal_(off.head.weight, std=0.1)
    on = variant(off, use_retrieval=True).eval()
    with torch.no_grad():
        assert not torch.allclose(on(images, ["q"] * 4)[0], off(images, ["q"] * 4)[0])


def test_joint_head_scores_any_class_vectors(joint_system, scene_batch):
    images = scene_batch[1]["image"]
    seen = joint_system.class_vectors
    extra = joint_system.class_name_vectors(["island", "bridge"])
    assert torch.allclose(extra.norm(dim=-1), torch.ones(2), atol=1e-5)
    logits = joint_system.score(images, torch.cat([seen, extra]))
    with torch.no_grad():
        forward, _ = joint_system(images, [joint_system.hparams.task_prompt] * len(images))
    assert logits.shape == (4, len(seen) + 2)
    assert torch.allclose(logits[:, : len(seen)], forward, atol=1e-5)
    with pytest.raises(ValueError, match="head 'joint'"):
        variant(joint_system, head="classifier").score(images, seen)
    with pytest.raises(ValueError, match="task 'scene'"):
        variant(joint_system, task="vqa")


def test_joint_head_trains_the_experts_not_the_towers_and_keeps_its_class_vectors(
    joint_system, scene_batch
):
    system = variant(joint_system).train()
    system.log = lambda *args, **kwargs: None
    losses = system.compute_losses(scene_batch[1], "train")
    losses["loss"].backward()
    assert all(p.grad is None for p in system.clip.parameters())
    assert system.head.weight.grad.abs().sum() > 0
    restored = SemanticExpertsSystem(**system.hparams)
    restored.load_state_dict(system.state_dict())  # the class vectors travel in checkpoints
    assert torch.equal(restored.class_vectors, joint_system.class_vectors)


def test_knowledge_exclude_leaves_the_concepts_out_of_retrieval(
    joint_system, clip_checkpoint, scene_batch
):
    assert {r["concept"] for r in joint_system.records} == set(KEPT)
    excluded = [*SMALL_KB, "harbor", "bridge"]
    without = make_system(clip_checkpoint, scene_batch[0], knowledge_exclude=excluded)
    assert {r["concept"] for r in without.records} == set(KEPT) - {"harbor", "bridge"}
    query = torch.randn(5, joint_system.knowledge_vectors.shape[1])
    vectors, _ = without.retrieve(query, "object", k=2, per_image=5)
    rows = [i for i, r in enumerate(without.records) if r["level"] == "object"]
    allowed = without.knowledge_vectors[rows]
    assert all(any(torch.equal(v, a) for a in allowed) for v in vectors[0])
    with pytest.raises(ValueError, match="unknown concept ids \\['atlantis'\\]"):
        variant(joint_system, knowledge_exclude=["atlantis"])


def test_direct_cues_add_the_retrieved_entries_to_the_image(joint_system, scene_batch):
    images = scene_batch[1]["image"][:2]
    direct = variant(joint_system, direct_cues=True).eval()
    with torch.no_grad():
        assert torch.allclose(
            direct.score(images, direct.class_vectors),
            joint_system.score(images, joint_system.class_vectors),
            atol=1e-4,
        )  # the weights start at 0
        direct.cue_weights.copy_(torch.tensor([0.0, 2.0]))  # scene cues only
        _, _, anchor = direct.fuse(images, ["q"] * 2)
        embedding = torch.nn.functional.normalize(direct.clip.encode_image(images), dim=-1)
        vectors, scores = direct.retrieve(embedding, "scene", k=2, per_image=1)
    weights = scores.clamp(min=0)[..., None]  # an entry pointing away adds nothing
    mean = (weights * vectors).sum(1) / weights.sum(1).clamp(min=1e-6)
    assert torch.allclose(anchor, embedding + 2 * mean, atol=1e-4)
    with pytest.raises(ValueError, match="head 'joint'"):
        variant(joint_system, head="classifier", direct_cues=True)


def test_residual_norm_bounds_what_the_experts_add():
    system = SemanticExpertsSystem(classes=["a", "b"], in_chans=4, dim=8, head="joint")
    bounded = SemanticExpertsSystem(**{**system.hparams, "residual_norm": 0.5})
    with torch.no_grad():
        system.head.bias[1] = 10.0  # the experts push along axis 1, ten times the image's length
    bounded.load_state_dict(system.state_dict())
    features, classes = torch.zeros(1, 16), torch.eye(128)[:2]
    anchor = classes[:1]  # the image along axis 0
    with torch.no_grad():  # cos to axes 0 and 1 of e0 + 0.5·e1, and of e0 + 10·e1
        assert torch.allclose(
            bounded.joint_logits(features, anchor, classes),
            torch.tensor([[100 / 1.25**0.5, 50 / 1.25**0.5]]),
        )
        assert torch.allclose(
            system.joint_logits(features, anchor, classes),
            torch.tensor([[100 / 101**0.5, 1000 / 101**0.5]]),
        )
    with pytest.raises(ValueError, match="head 'joint'"):
        SemanticExpertsSystem(classes=["a"], residual_norm=1.0)
