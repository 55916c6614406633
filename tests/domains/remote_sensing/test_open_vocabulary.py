"""Open-vocabulary arms on a hand-made joint space, where the right answer is known."""

import pytest
import torch
import torch.nn.functional as F
from domainvlm.core.encoder import Encoder
from domainvlm.domains.remote_sensing import open_vocabulary as ov

AXES = {"road": 0, "highway": 0, "water": 1, "river": 1, "trees": 2, "forest": 2, "noise": 3}


def text_vector(text: str) -> torch.Tensor:
    """Words we know point along their axis; anything else (an unseen name) along "noise"."""
    vector = torch.zeros(4)
    for word in text.lower().replace(":", " ").replace(".", " ").split():
        vector[AXES.get(word, AXES["noise"])] += 1.0
    return vector


def toy_encoder() -> Encoder:
    return Encoder(
        name="toy",
        image_fn=lambda images: images,
        text_fn=lambda texts: torch.stack([text_vector(t) for t in texts]),
        load_image=lambda path: torch.zeros(4),
        modules=[torch.nn.Linear(1, 1)],
    )


RECORDS = [
    {"text": "bridge: road water", "concept": "bridge", "level": "object", "lang": "en"},
    {"text": "brücke: road water", "concept": "bridge", "level": "object", "lang": "de"},
    {"text": "island: trees water", "concept": "island", "level": "scene", "lang": "en"},
    {"text": "forest: trees", "concept": "forest", "level": "scene", "lang": "en"},
]


def test_harmonic_mean_is_low_when_one_side_is_low():
    assert ov.harmonic_mean(0.9, 0.1) == pytest.approx(0.18)
    assert ov.harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert ov.harmonic_mean(0.0, 0.0) == 0.0


def test_generalised_accuracies_split_by_the_image_class():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0]])
    labels = torch.tensor([0, 0, 2, 2])  # class 2 unseen: one of its two images right
    result = ov.generalised_accuracies(logits, labels, {2})
    assert result == {"seen": 0.5, "unseen": 0.5, "harmonic": 0.5}
    with pytest.raises(ValueError, match="both seen and unseen"):
        ov.generalised_accuracies(logits, labels, {0, 2})


def test_descriptions_give_unseen_names_a_meaning_and_missing_entries_fall_back():
    encoder = toy_encoder()
    knowledge = ov.embed_knowledge(encoder, RECORDS)
    names = ov.name_weights(encoder, ["bridge", "island", "unknown"], ["{}"])
    assert torch.allclose(names[0], names[1])  # both unseen names are pure noise
    weights = ov.description_weights(encoder, knowledge, ["bridge", "island", "unknown"], names)
    assert (
        weights[0] @ F.normalize(torch.tensor([1.0, 1, 0, 0]), dim=0) > 0.8
    )  # the name adds noise
    assert (
        weights[1] @ F.normalize(torch.tensor([0.0, 1, 1, 0]), dim=0) > 0.8
    )  # the name adds noise
    assert torch.equal(weights[2], names[2])
    image = F.normalize(torch.tensor([[1.0, 1, 0, 0]]), dim=-1)  # a road over water
    assert ov.logits(image, weights[:2]).argmax() == 0
    assert ov.logits(image, names[:2])[0, 0] == ov.logits(image, names[:2])[0, 1]


def test_retrieved_cues_bring_the_entries_the_pixels_match():
    encoder = toy_encoder()
    knowledge = ov.embed_knowledge(encoder, RECORDS)
    features = ov.ImageFeatures(
        embedding=F.normalize(torch.tensor([[0.0, 1, 1, 0]]), dim=-1),  # trees in water
        patches=torch.tensor([[[1.0, 1, 0, 0], [0.0, 0, 1, 0]]]),  # a patch of road over water
    )
    cues = ov.retrieved_cues(knowledge, features, k_scene=1, k_object=1)
    island, bridge = knowledge.vectors[2], knowledge.vectors[0]
    assert cues.shape == (1, 4)
    assert cues[0] @ island > 0.5 and cues[0] @ bridge > 0.5
    without = ov.embed_knowledge(encoder, [r for r in RECORDS if r["concept"] == "forest"])
    assert torch.allclose(ov.retrieved_cues(without, features, 1, 1)[0, :2], torch.zeros(2))
    assert ov.augmented(features, cues).norm() == pytest.approx(1.0)


def test_image_features_batch_the_files():
    def encode(images):
        return images * 2, images.unsqueeze(1).repeat(1, 3, 1)

    features = ov.image_features(["a", "b", "c"], lambda p: torch.ones(4), encode, batch_size=2)
    assert features.embedding.shape == (3, 4) and features.patches.shape == (3, 3, 4)
    assert torch.allclose(features.embedding.norm(dim=-1), torch.ones(3))


def test_mentions_find_whole_names_and_prefer_the_longest():
    names = {"sea_lake": "sea or lake", "lake": "lake", "river": "river", "wood": "Wald"}
    assert ov.mentions("Ships beside a sea or lake, near a river.", names) == ["sea_lake", "river"]
    assert ov.mentions("riverside lakes", names) == []  # not words of their own
    assert ov.mentions("Wald am See", names) == ["wood"]
    assert ov.mentions("四面被海洋或湖泊环绕", {"sea_lake": "海洋或湖泊"}) == ["sea_lake"]


def test_mention_vectors_compose_the_named_concepts_and_fall_back_to_the_own_name():
    encoder = toy_encoder()
    records = [
        {"text": "bridge: A highway crossing a river.", "lang": "en", "concept": "bridge"},
        {"text": "forest: Land densely covered by trees.", "lang": "en", "concept": "forest"},
    ]
    vectors = ov.mention_vectors(encoder, records)
    prompts = ov.templates("en")
    highway, river, forest = ov.name_weights(encoder, ["highway", "river", "forest"], prompts)
    assert torch.allclose(vectors[0], F.normalize(highway + river, dim=0), atol=1e-6)
    assert torch.allclose(vectors[1], forest, atol=1e-6)
    knowledge = ov.embed_knowledge(encoder, records, "mentions")
    assert torch.equal(knowledge.vectors, vectors)
    with pytest.raises(ValueError, match="embedding must be one of"):
        ov.embed_knowledge(encoder, records, "words")


def test_calibrated_stacking_lowers_only_seen_columns():
    logits = torch.tensor([[5.0, 0, 3], [0, 4, 3]])
    shifted = ov.calibrated(logits, {2}, 0.75)
    assert torch.equal(shifted, torch.tensor([[4.25, -0.75, 3], [-0.75, 3.25, 3]]))
    assert torch.equal(ov.seen_margins(logits, {2}), torch.tensor([2.0, 1.0]))


def test_gamma_from_seen_images_only_gives_up_at_most_the_tolerance():
    logits = torch.tensor([[5.0, 1, 3], [1, 4, 3.5], [2, 6, 1], [0, 2, 1]])
    labels = torch.tensor([0, 1, 0, 1])  # right, right (margin 0.5), wrong, right (margin 1)
    # one image of four may turn wrong: halfway between the margins 0.5 and 1
    assert ov.gamma_seen_only(logits, labels, {2}, tolerance=0.25) == pytest.approx(0.75)
    assert ov.gamma_seen_only(logits, labels, {2}, tolerance=0.0) == pytest.approx(0.25)
    assert ov.gamma_seen_only(logits, labels, {2}, tolerance=0.8) == pytest.approx(3.0)
    seen = ov.calibrated(logits, {2}, 0.75)[:, :2].argmax(1) == labels
    assert ov.accuracy(ov.calibrated(logits, {2}, 0.75), labels) == 0.5  # 0.75 before
    assert seen.tolist() == [True, True, False, True]  # image 1 lost to the unseen class
    with pytest.raises(ValueError, match="seen classes only"):
        ov.gamma_seen_only(logits, torch.tensor([0, 1, 2, 1]), {2})


def test_gamma_on_a_held_out_split_maximises_the_harmonic_mean():
    logits = torch.tensor([[5.0, 0, 3], [0, 4, 3], [4, 0, 3], [0, 3.5, 3]])
    labels = torch.tensor([0, 1, 2, 2])  # margins 2, 1, 1, 0.5; class 2 unseen
    assert ov.generalised_accuracies(logits, labels, {2})["harmonic"] == 0.0
    gamma = ov.gamma_held_out(logits, labels, {2})
    assert gamma == pytest.approx(0.75)  # H 2/3, as at 1.5; the smaller γ is kept
    result = ov.generalised_accuracies(ov.calibrated(logits, {2}, gamma), labels, {2})
    assert result == {"seen": 1.0, "unseen": 0.5, "harmonic": pytest.approx(2 / 3)}
