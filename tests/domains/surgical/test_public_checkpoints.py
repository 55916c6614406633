"""The released SurgVLP layout, built here (nothing is downloaded), mapped onto our model."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from domainvlm.core.checkpoint import load_system
from domainvlm.core.errors import CheckpointError
from domainvlm.domains.surgical.public_checkpoints import convert, map_public_state_dict

EVAL_CONFIGS = Path(__file__).parents[3] / "configs" / "surgical" / "eval"

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "clip",
    "the",
    "cystic",
    "duct",
    "##s",
    "hook",
]


def _bert_folder(folder: Path) -> None:
    """A 4-layer BERT config (hidden 768, as Bio_ClinicalBERT) and a WordPiece tokenizer."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, PreTrainedTokenizerFast

    BertConfig(
        vocab_size=len(VOCAB), hidden_size=768, num_hidden_layers=4, num_attention_heads=12,
        intermediate_size=64,
    ).save_pretrained(folder)  # fmt: skip
    backend = Backend(models.WordPiece({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    backend.decoder = decoders.WordPiece()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
    ).save_pretrained(folder)  # fmt: skip


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A state dict in the public layout with random weights, and the reference modules."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("public")
    _bert_folder(folder / "bert")
    torch.manual_seed(0)
    resnet = timm.create_model("resnet50", pretrained=False).eval()  # torchvision's names
    embedder = torch.nn.Linear(2048, 768)
    bert = BertModel(BertConfig.from_pretrained(folder / "bert")).eval()
    state = {f"backbone_img.model.{k}": v for k, v in resnet.state_dict().items()}
    state |= {f"backbone_img.global_embedder.{k}": v for k, v in embedder.state_dict().items()}
    state |= {f"backbone_text.model.{k}": v for k, v in bert.state_dict().items()}
    # releases saved with transformers < 4.31 hold this buffer; BERT rebuilds it now
    state["backbone_text.model.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save({"state_dict": state}, folder / "surgvlp.pth")
    return (
        folder / "surgvlp.pth",
        folder / "bert",
        {"resnet": resnet, "embedder": embedder, "bert": bert},
    )


def test_converted_checkpoint_embeds_as_the_reference(release, tmp_path: Path):
    source, bert_dir, reference = release
    system = load_system(convert(source, bert_dir, tmp_path / "public.ckpt"))
    encoder = system.encoder()
    frames = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference["embedder"](
            reference["resnet"].forward_head(
                reference["resnet"].forward_features(frames), pre_logits=True
            )
        )
    assert torch.allclose(encoder.image_fn(frames), expected, atol=1e-4)
    # text: each of the last 4 layers summed over [CLS]..[SEP] / padded length, layers summed
    tokens = system.tokenizer(["clip the cystic ducts"])
    mask = (tokens != 0).long()
    with torch.no_grad():
        hidden = reference["bert"](tokens, mask, output_hidden_states=True).hidden_states[-4:]
    by_hand = sum((h * mask[..., None]).sum(dim=1) / tokens.shape[1] for h in hidden)
    assert torch.allclose(encoder.text_fn(["clip the cystic ducts"]), by_hand, atol=1e-4)


def test_unknown_or_missing_weights_are_errors(release):
    source, _, _ = release
    state = torch.load(source, weights_only=True)["state_dict"]
    own = {"clip.visual.trunk.conv1.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="has no counterpart"):
        map_public_state_dict(state, own)
    with pytest.raises(CheckpointError, match="not in the SurgVLP layout"):
        map_public_state_dict({"head.weight": torch.zeros(1)}, own)


def _eval_args(argv: list[str]):
    import argparse

    from domainvlm.core.commands import evaluate

    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("name", ["surgvlp", "hecvl", "peskavlp"])
def test_eval_configs_name_a_release_and_a_bert_folder(name: str):
    args = _eval_args(["phases", "--config", str(EVAL_CONFIGS / f"{name}.yaml"), "--data", "d"])
    assert args.checkpoint == f"checkpoints/{name}.pth"
    assert args.bert_dir == "weights/Bio_ClinicalBERT" and args.table


def test_eval_config_converts_the_release_in_memory(release):
    """HecVL's release has SurgVLP's layout: the config's path, with the files made here."""
    from domainvlm.domains.surgical.tasks import _encoder

    source, bert_dir, reference = release
    args = _eval_args(
        ["phases", "--config", str(EVAL_CONFIGS / "hecvl.yaml"), "--data", "d",
         "--checkpoint", str(source), "--bert-dir", str(bert_dir)]
    )  # fmt: skip
    encoder = _encoder(args)
    frames = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = reference["resnet"].forward_head(
            reference["resnet"].forward_features(frames), pre_logits=True
        )
        expected = reference["embedder"](features)
    assert torch.allclose(encoder.image_fn(frames), expected, atol=1e-4)
    assert encoder.name == str(source.resolve())
