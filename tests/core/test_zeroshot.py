"""Zero-shot API and encoder specs."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from domainvlm.core.encoder import Encoder
from domainvlm.core.encoder_loader import (
    EncoderSpecError,
    load_encoder,
    openclip_model_encoder,
    resolve_device,
)
from domainvlm.core.tokenizers import ByteTokenizer
from domainvlm.core.zeroshot import (
    LOGIT_SCALE,
    TemplateError,
    ZeroShotClassifier,
    fill,
    load_templates,
    templates_for,
)
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from torch import Tensor

from tests.helpers import colour_png, save_checkpoint
from tests.plugins.colours import ColourSystem


def tiny_openclip() -> Encoder:
    torch.manual_seed(0)
    return openclip_model_encoder("dvlm-tiny")


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return tiny_openclip()


CLASSES = [f"class {i}" for i in range(12)]  # more than open_clip's 10 classes per batch


def test_class_weights_equal_open_clip_build_zero_shot_classifier(tiny: Encoder):
    (model,) = tiny.modules
    tokenizer = ByteTokenizer(model.context_length)
    classifier = ZeroShotClassifier(tiny, batch_size=7)
    for templates in (
        ["a photo of a {}.", "itap of a {}.", "a {} seen from above"],
        [lambda c: f"a satellite image of {c}", lambda c: f"{c}, aerial view"],
    ):
        theirs = build_zero_shot_classifier(model, tokenizer, CLASSES, templates)
        ours = classifier.class_weights(CLASSES, templates)
        assert ours.shape == (12, 128)
        torch.testing.assert_close(ours, theirs.T, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(ours.norm(dim=1), torch.ones(12))


def test_named_placeholder_is_the_same_prompt(tiny: Encoder):
    classifier = ZeroShotClassifier(tiny)
    assert (
        fill("a photo of a {c}.", "dog") == fill("a photo of a {}.", "dog") == "a photo of a dog."
    )
    torch.testing.assert_close(
        classifier.class_weights(["dog", "cat"], ["a photo of a {c}."]),
        classifier.class_weights(["dog", "cat"], ["a photo of a {}."]),
    )


@pytest.fixture(scope="module")
def bpe_model_name(tmp_path_factory) -> str:
    """A tiny config with CLIP's BPE vocabulary, registered with open_clip for this module."""
    folder = tmp_path_factory.mktemp("configs")
    config = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    (folder / "test-bpe-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return "test-bpe-tiny"


def test_standard_open_clip_models_use_their_own_tokenizer(bpe_model_name: str):
    torch.manual_seed(0)
    encoder = load_encoder(f"openclip:{bpe_model_name}")
    assert encoder.name == f"openclip:{bpe_model_name}"
    (model,) = encoder.modules
    tokenizer = open_clip.get_tokenizer(bpe_model_name)
    theirs = build_zero_shot_classifier(model, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    ours = ZeroShotClassifier(encoder).class_weights(["cat", "dog"], ["a photo of a {}."])
    torch.testing.assert_close(ours, theirs.T, atol=1e-6, rtol=1e-5)


def counting(encoder: Encoder) -> list[int]:
    calls = [0]
    text_fn = encoder.text_fn

    def counted(texts):
        calls[0] += 1
        return text_fn(texts)

    encoder.text_fn = counted
    return calls


def test_class_weights_are_cached_by_classes_and_templates():
    encoder = ColourSystem().encoder()
    calls = counting(encoder)
    classifier = ZeroShotClassifier(encoder, cache_size=2)
    first = classifier.class_weights(["red", "blue"], ["a {} square"])
    assert classifier.class_weights(["red", "blue"], ["a {} square"]) is first
    assert calls[0] == 1
    classifier.class_weights(["blue", "red"], ["a {} square"])
    classifier.class_weights(["red", "blue"], ["the {}"])
    assert calls[0] == 3
    classifier.class_weights(["red", "blue"], ["a {} square"])  # evicted: cache holds two
    assert calls[0] == 4


def test_predict_on_tensors_is_softmax_of_100_cosine(tiny: Encoder):
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classifier = ZeroShotClassifier(tiny, batch_size=2)
    classes = ["forest", "river", "beach", "airport"]
    weights = classifier.class_weights(classes, ["a photo of a {}."])
    expected = (LOGIT_SCALE * tiny.encode_images(images) @ weights.T).softmax(dim=1)
    predictions = classifier.predict(images, classes, ["a photo of a {}."], top_k=3)
    assert len(predictions) == 3
    for prediction, row in zip(predictions, expected):
        assert prediction.probabilities == pytest.approx(dict(zip(classes, row.tolist())), abs=1e-6)
        assert sum(prediction.probabilities.values()) == pytest.approx(1.0)
        assert prediction.label == classes[int(row.argmax())]
        assert [label for label, _ in prediction.top_k] == [
            classes[i] for i in row.argsort(descending=True)[:3]
        ]
        probabilities = [p for _, p in prediction.top_k]
        assert probabilities == sorted(probabilities, reverse=True)
    assert len(classifier.predict(images[0], classes, top_k=10)[0].top_k) == 4


def test_predict_on_png_paths_from_a_checkpoint(tmp_path: Path):
    checkpoint = save_checkpoint(ColourSystem(), tmp_path / "colour.ckpt")
    encoder = load_encoder(str(checkpoint))
    assert encoder.name == str(checkpoint.resolve())
    paths = [
        colour_png(tmp_path / "a.png", (220, 30, 20)),
        colour_png(tmp_path / "b.png", (10, 40, 230), seed=1),
        colour_png(tmp_path / "c.png", (30, 200, 50), seed=2),
    ]
    predictions = ZeroShotClassifier(encoder).predict(
        paths, ["red", "green", "blue"], ["a {} square"]
    )
    assert [p.label for p in predictions] == ["red", "blue", "green"]
    assert all(p.probabilities[p.label] > 0.9 for p in predictions)


def test_encoder_sends_inputs_to_its_device_and_results_to_the_cpu():
    """The meta device stands in for a GPU: what reaches the model is on the encoder's device."""
    seen: list[torch.device] = []

    def on_device(output: Tensor):
        def fn(inputs):
            if isinstance(inputs, Tensor):
                seen.append(inputs.device)
            return output

        return fn

    encoder = Encoder(
        name="meta",
        image_fn=on_device(torch.ones(2, 4)),
        text_fn=on_device(torch.ones(1, 4)),
        load_image=str,
        modules=[],
        score_fn=lambda images, texts: on_device(torch.ones(len(images), len(texts)))(images),
        device="meta",
    )
    images = torch.zeros(2, 3, 8, 8)
    assert encoder.encode_images(images).device.type == "cpu"
    assert encoder.encode_texts(["a"]).device.type == "cpu"
    assert encoder.score(images, ["a", "b"]).shape == (2, 2)
    assert [device.type for device in seen] == ["meta", "meta"]


def test_device_names_are_checked():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(EncoderSpecError, match="not a device torch knows"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(EncoderSpecError, match="no CUDA GPU"):
            resolve_device("cuda:0")


def test_encoder_score_fn_replaces_cosine_and_averages_templates():
    encoder = ColourSystem().encoder()
    seen: list[list[str]] = []

    def itm_scores(images: Tensor, texts: list[str]) -> Tensor:
        seen.append(list(texts))
        return torch.arange(len(texts), dtype=torch.float32).repeat(len(images), 1)

    encoder.score_fn = itm_scores
    logits = ZeroShotClassifier(encoder).logits(
        torch.zeros(2, 3, 8, 8), ["a", "b"], ["{} 1", "{} 2"]
    )
    assert seen == [["a 1", "a 2", "b 1", "b 2"]]
    torch.testing.assert_close(logits, torch.tensor([[0.5, 2.5], [0.5, 2.5]]))


def test_templates_from_files_and_languages(tmp_path: Path):
    (tmp_path / "t.json").write_text(json.dumps({"en": ["a {}"], "pt": ["uma foto de {c}"]}))
    assert load_templates(tmp_path / "t.json", "pt") == ["uma foto de {c}"]
    with pytest.raises(TemplateError, match="no 'de' entry"):
        load_templates(tmp_path / "t.json", "de")
    (tmp_path / "list.json").write_text(json.dumps(["x {}", "y {}"]))
    assert load_templates(tmp_path / "list.json") == ["x {}", "y {}"]
    (tmp_path / "lines.txt").write_text("a photo of {}.\n\n  an image of {c}.  \n")
    assert load_templates(tmp_path / "lines.txt") == ["a photo of {}.", "an image of {c}."]
    (tmp_path / "bad.txt").write_text("no placeholder here\n")
    with pytest.raises(TemplateError, match=r"bad\.txt"):
        load_templates(tmp_path / "bad.txt")
    assert "uma foto de {}." in templates_for("pt")
    with pytest.raises(TemplateError, match="'xx'"):
        templates_for("xx")


def test_bad_class_lists_and_templates_are_user_errors():
    classifier = ZeroShotClassifier(ColourSystem().encoder())
    with pytest.raises(TemplateError, match="repeated: red"):
        classifier.class_weights(["red", "blue", "red"])
    with pytest.raises(TemplateError, match="no class names"):
        classifier.class_weights([])
    with pytest.raises(TemplateError, match="placeholder"):
        classifier.class_weights(["red"], ["a {x} square"])


def test_encoder_specs_rebuild_the_same_encoder(tmp_path: Path, tiny: Encoder):
    (model,) = tiny.modules
    weights = tmp_path / "tiny.pt"
    torch.save(model.state_dict(), weights)
    encoder = load_encoder(f"openclip:dvlm-tiny:{weights}")
    assert encoder.name == f"openclip:dvlm-tiny:{weights.resolve()}"
    assert encoder.identity() == {"name": encoder.name, "sha256": tiny.identity()["sha256"]}
    assert load_encoder(encoder.name).identity() == encoder.identity()

    with pytest.raises(EncoderSpecError, match="not an existing checkpoint"):
        load_encoder(str(tmp_path / "missing.ckpt"))
    with pytest.raises(ValueError, match="unknown model"):
        load_encoder("openclip:no-such-model")
