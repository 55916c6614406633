"""Tokenizers: multilingual round trips, open_clip and HF wrappers, whole-word masking."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import torch
from domainvlm.core.tokenizers import (
    ByteTokenizer,
    Tokenizer,
    TokenizerError,
    build_tokenizer,
    whole_word_mask,
)

SENTENCES = {
    "en": "A large airport with several planes parked near the terminal.",
    "pt": "Um grande aeroporto com vários aviões estacionados perto do terminal.",
    "es": "Un gran aeropuerto con varios aviones estacionados cerca de la terminal.",
    "fr": "Un grand aéroport avec plusieurs avions garés près du terminal.",
    "de": "Ein großer Flughafen mit mehreren Flugzeugen, die nahe dem Terminal geparkt sind.",
    "nl": "Een groot vliegveld met verschillende vliegtuigen geparkeerd bij de terminal.",
    "it": "Un grande aeroporto con diversi aerei parcheggiati vicino al terminal.",
    "zh": "一个大型机场，航站楼附近停着几架飞机。",
    "ko": "터미널 근처에 여러 대의 비행기가 주차된 큰 공항.",
    "ru": "Большой аэропорт с несколькими самолётами у терминала.",
}

WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "lung", "##s", "are"]
WORDPIECE_VOCAB += ["clear", ".", "no", "effusion"]


def _words(tokenizer: Tokenizer, ids: list[int]) -> list[str]:
    """Decode each word of ``ids`` on its own, using the tokenizer's word grouping."""
    groups: dict[int, list[int]] = {}
    for token_id, word in zip(ids, tokenizer.word_ids(ids)):
        if word is not None:
            groups.setdefault(word, []).append(token_id)
    return [tokenizer.decode(groups[w]).strip() for w in sorted(groups)]


def test_multilingual_round_trips_ten_languages_without_unknown_ids() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=128)
    ids = tokenizer(list(SENTENCES.values()))
    assert ids.shape == (10, 128) and ids.dtype == torch.long
    assert int(ids.min()) >= 0 and int(ids.max()) < tokenizer.vocab_size == 260
    for row, text in zip(ids.tolist(), SENTENCES.values()):
        length = row.index(ByteTokenizer.EOS)
        assert row[0] == ByteTokenizer.BOS and all(i == tokenizer.pad_id for i in row[length + 1 :])
        content = row[1:length]
        assert all(i not in tokenizer.special_ids for i in content)
        assert len(content) == len(text.encode("utf-8"))
        assert tokenizer.decode(row) == text


def test_eos_is_where_open_clip_pools() -> None:
    from open_clip.transformer import text_global_pool

    tokenizer = build_tokenizer("multilingual", context_length=64)
    ids = tokenizer(["short", SENTENCES["ko"], ""])
    masked, _ = whole_word_mask(ids, tokenizer, 0.5, torch.Generator().manual_seed(0))
    positions = torch.arange(64).expand(3, 64).unsqueeze(-1).float()
    for batch in (ids, masked):
        eos_positions = [row.index(ByteTokenizer.EOS) for row in batch.tolist()]
        pooled = text_global_pool(positions, batch, pool_type="argmax")
        # "short" is 5 bytes; the Korean text is cut to at most 62 bytes, between syllables
        korean_bytes = len(tokenizer.decode(ids[1].tolist()).encode())
        assert 60 <= korean_bytes <= 62
        assert pooled.squeeze(-1).tolist() == eos_positions == [6, 1 + korean_bytes, 1]


def test_truncation_keeps_eos_and_whole_characters() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=12)
    row = tokenizer([SENTENCES["zh"]])[0].tolist()
    # 10 bytes of room hold three 3-byte characters; the 4th would be split, so it is dropped.
    assert row[0] == ByteTokenizer.BOS and row[10] == ByteTokenizer.EOS and row[11] == 0
    assert tokenizer.decode(row) == SENTENCES["zh"][:3]
    english = build_tokenizer("multilingual", context_length=12)([SENTENCES["en"]])[0].tolist()
    assert english[-1] == ByteTokenizer.EOS and tokenizer.decode(english) == SENTENCES["en"][:10]


def test_same_text_in_other_unicode_forms_gets_the_same_ids() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=32)
    decomposed = unicodedata.normalize("NFD", "aviões  estacionados ")
    assert torch.equal(tokenizer([decomposed]), tokenizer(["aviões estacionados"]))


def test_name_rebuilds_the_tokenizer() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=40)
    rebuilt = build_tokenizer(tokenizer.name, tokenizer.context_length)
    assert torch.equal(rebuilt([SENTENCES["fr"]]), tokenizer([SENTENCES["fr"]]))


def test_bad_specs_are_rejected_clearly() -> None:
    with pytest.raises(TokenizerError, match="unknown tokenizer spec 'bert'"):
        build_tokenizer("bert")
    with pytest.raises(TokenizerError, match="at least 2"):
        build_tokenizer("multilingual", context_length=1)
    with pytest.raises(TokenizerError, match="no model config named 'ViT-Nope'"):
        build_tokenizer("openclip:ViT-Nope")
    with pytest.raises(TokenizerError, match="does not exist"):
        build_tokenizer("hf:/no/such/tokenizer/folder")


def test_multilingual_words_split_on_spaces_and_cjk_ideographs() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=128)
    for lang in ("en", "de", "ko", "ru"):
        row = tokenizer([SENTENCES[lang]])[0].tolist()
        assert _words(tokenizer, row) == SENTENCES[lang].split()
    row = tokenizer(["机场 airport"])[0].tolist()
    assert _words(tokenizer, row) == ["机", "场", "airport"]


def test_openclip_tokenizer_matches_open_clip() -> None:
    import open_clip

    tokenizer = build_tokenizer("openclip:ViT-B-32", context_length=77)
    text = "a satellite photo of a dense residential area."
    ids = tokenizer([text])
    assert torch.equal(ids, open_clip.get_tokenizer("ViT-B-32")([text]))
    assert tokenizer.vocab_size == 49408 and tokenizer.name == "openclip:ViT-B-32"
    assert tokenizer.mask_id is None and int(ids[0].argmax()) == int((ids[0] > 0).sum()) - 1
    assert tokenizer.decode(ids[0].tolist()) == text.replace(".", " .")
    assert _words(tokenizer, ids[0].tolist()) == text.replace(".", " .").split()
    with pytest.raises(TokenizerError, match="no mask token"):
        whole_word_mask(ids, tokenizer, 0.15)


def _save_wordpiece(folder: Path) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Backend(
        models.WordPiece({w: i for i, w in enumerate(WORDPIECE_VOCAB)}, unk_token="[UNK]")
    )
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    backend.decoder = decoders.WordPiece()
    PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(folder)


def test_hf_tokenizer_uses_the_saved_vocabulary(tmp_path: Path) -> None:
    _save_wordpiece(tmp_path)
    tokenizer = build_tokenizer(f"hf:{tmp_path}", context_length=10)
    ids = tokenizer(["The lungs are clear."])[0].tolist()
    assert ids == [2, 5, 6, 7, 8, 9, 10, 3, 0, 0]
    assert (tokenizer.pad_id, tokenizer.mask_id, tokenizer.vocab_size) == (0, 4, 13)
    assert tokenizer.word_ids(ids) == [None, 0, 1, 1, 2, 3, 4, None, None, None]
    assert _words(tokenizer, ids) == ["the", "lungs", "are", "clear", "."]
    truncated = build_tokenizer(tokenizer.name, context_length=5)(["the lungs are clear."])
    assert truncated[0].tolist() == [2, 5, 6, 7, 3]


def test_hf_folder_with_only_a_vocab_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizer"}')
    tokenizer = build_tokenizer(f"hf:{tmp_path}", context_length=8)
    assert tokenizer(["no effusion."])[0].tolist() == [2, 11, 12, 10, 3, 0, 0, 0]


def test_hf_tokenizer_whose_vocabulary_was_ignored_is_refused(tmp_path: Path) -> None:
    """The transformers 5 trap: ``BertTokenizerFast(vocab_file=...)`` drops the file silently."""
    from transformers import BertTokenizerFast

    (tmp_path / "vocab.txt").write_text("\n".join(WORDPIECE_VOCAB) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path / "saved")
    with pytest.raises(TokenizerError, match="vocabulary file was not read"):
        build_tokenizer(f"hf:{tmp_path / 'saved'}")


def test_hf_byte_level_bpe_groups_words(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(list(SENTENCES.values()) * 3, trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", mask_token="<mask>"
    ).save_pretrained(tmp_path)
    tokenizer = build_tokenizer(f"hf:{tmp_path}", context_length=256)
    for lang in ("en", "ru"):
        row = tokenizer([SENTENCES[lang]])[0].tolist()
        assert tokenizer.decode(row) == SENTENCES[lang]
        assert _words(tokenizer, row) == SENTENCES[lang].split()


def test_whole_word_mask_masks_the_ratio_of_whole_words() -> None:
    vocabulary = [
        "field",
        "river",
        "forest",
        "harbour",
        "airport",
        "bridge",
        "meadow",
        "road",
        "stadium",
    ]
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(len(vocabulary), (1000,), generator=generator).tolist()
    text = " ".join(vocabulary[i] for i in picks)
    tokenizer = build_tokenizer("multilingual", context_length=len(text) + 2)
    ids = tokenizer([text])
    masked, labels = whole_word_mask(ids, tokenizer, 0.15, torch.Generator().manual_seed(1))

    words = tokenizer.word_ids(ids[0].tolist())
    labelled = (labels[0] != -100).tolist()
    picked = {w for w, hit in zip(words, labelled) if hit}
    assert None not in picked and len(picked) == 150
    assert all(hit == (w in picked) for w, hit in zip(words, labelled))
    keep = labels[0] != -100
    assert torch.equal(labels[0][keep], ids[0][keep])
    assert torch.equal(masked[0][~keep], ids[0][~keep])

    outcome = masked[0][keep]
    original = ids[0][keep]
    n = int(keep.sum())
    as_mask = float((outcome == tokenizer.mask_id).sum()) / n
    unchanged = float((outcome == original).sum()) / n
    randomised = 1 - as_mask - unchanged
    assert (
        abs(as_mask - 0.8) < 0.04 and abs(unchanged - 0.1) < 0.03 and abs(randomised - 0.1) < 0.03
    )
    assert all(int(i) not in tokenizer.special_ids for i in outcome if i != tokenizer.mask_id)


def test_whole_word_mask_is_reproducible_and_masks_at_least_one_word() -> None:
    tokenizer = build_tokenizer("multilingual", context_length=32)
    ids = tokenizer(["lung", "clear lungs", ""])
    first = whole_word_mask(ids, tokenizer, 0.15, torch.Generator().manual_seed(3))
    second = whole_word_mask(ids, tokenizer, 0.15, torch.Generator().manual_seed(3))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    labelled_per_row = (first[1] != -100).sum(dim=1).tolist()
    assert labelled_per_row[0] == 4 and labelled_per_row[1] in (5, 6) and labelled_per_row[2] == 0
