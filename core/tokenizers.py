"""Tokenizers behind one small protocol, chosen by a spec string that configs can carry.

Specs: ``"multilingual"`` (ours: UTF-8 bytes, offline, no unknown tokens in any script),
``"openclip:<model-name>"`` (open_clip's tokenizer for that model) and ``"hf:<folder-or-hub-id>"``
(a transformers tokenizer). ``tokenizer.name`` is the spec, so a checkpoint can rebuild it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from domainvlm.core.errors import DomainVLMError
from torch import Tensor

IGNORE_INDEX = -100


class TokenizerError(DomainVLMError, ValueError):
    pass


class Tokenizer(Protocol):
    """``tok(texts) -> LongTensor [B, context_length]``, padded with ``pad_id``."""

    name: str
    vocab_size: int
    context_length: int
    pad_id: int
    mask_id: int | None
    special_ids: frozenset[int]

    def __call__(self, texts: Sequence[str] | str) -> Tensor: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def word_ids(self, ids: Sequence[int]) -> list[int | None]:
        """Word index of every position (None for special tokens and separators)."""
        ...


def _as_list(texts: Sequence[str] | str) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def _is_cjk_ideograph(char: str) -> bool:
    """Ideographs are words on their own (as in BERT): Chinese is written without spaces."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF
        or 0x3400 <= code <= 0x4DBF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FA1F
    )


class ByteTokenizer:
    """Byte-level UTF-8 tokenizer: works for every language with no vocabulary file.

    Ids: pad 0, bos 1, mask 2, byte b -> b + 3, eos last (259). open_clip's text transformer pools
    at ``argmax(token_id)``, so EOS must be the highest id of every sequence. Text is NFC-normalised
    and whitespace-collapsed so the same caption always gets the same ids. A CJK character costs 3
    tokens: give Chinese captions a longer ``context_length``.
    """

    PAD, BOS, MASK, BYTE_OFFSET = 0, 1, 2, 3
    EOS = BYTE_OFFSET + 256

    def __init__(self, context_length: int = 77) -> None:
        if context_length < 2:
            raise TokenizerError(
                f"context_length must be at least 2 (BOS + EOS), got {context_length}"
            )
        self.name = "multilingual"
        self.context_length = context_length
        self.vocab_size = self.EOS + 1
        self.pad_id = self.PAD
        self.mask_id: int | None = self.MASK
        self.special_ids = frozenset({self.PAD, self.BOS, self.MASK, self.EOS})

    def __call__(self, texts: Sequence[str] | str) -> Tensor:
        texts = _as_list(texts)
        out = torch.full((len(texts), self.context_length), self.PAD, dtype=torch.long)
        for row, text in enumerate(texts):
            data = self._truncate(" ".join(unicodedata.normalize("NFC", text).split()).encode())
            ids = np.frombuffer(data, dtype=np.uint8).astype(np.int64) + self.BYTE_OFFSET
            out[row, 0] = self.BOS
            out[row, 1 : 1 + len(ids)] = torch.from_numpy(ids)
            out[row, 1 + len(ids)] = self.EOS
        return out

    def _truncate(self, data: bytes) -> bytes:
        """Cut to the room between BOS and EOS, never inside a multi-byte character."""
        cut = self.context_length - 2
        if len(data) <= cut:
            return data
        while cut > 0 and data[cut] & 0xC0 == 0x80:
            cut -= 1
        return data[:cut]

    def _is_byte(self, token_id: int) -> bool:
        return self.BYTE_OFFSET <= token_id < self.EOS

    def _is_continuation(self, token_id: int) -> bool:
        return (token_id - self.BYTE_OFFSET) & 0xC0 == 0x80

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.BYTE_OFFSET for i in ids if self._is_byte(int(i)))
        return data.decode("utf-8", errors="replace")

    def word_ids(self, ids: Sequence[int]) -> list[int | None]:
        """Words are whitespace-separated runs; each CJK ideograph is a word of its own."""
        ids = [int(i) for i in ids]
        out: list[int | None] = [None] * len(ids)
        word, in_word, start = -1, False, 0
        while start < len(ids):
            if not self._is_byte(ids[start]):
                in_word = False
                start += 1
                continue
            end = start + 1
            while end < len(ids) and self._is_byte(ids[end]) and self._is_continuation(ids[end]):
                end += 1
            char = self.decode(ids[start:end])
            if char.isspace():
                in_word = False
            else:
                standalone = len(char) == 1 and _is_cjk_ideograph(char)
                if standalone or not in_word:
                    word += 1
                in_word = not standalone
                out[start:end] = [word] * (end - start)
            start = end
        return out


class OpenClipBPETokenizer:
    """open_clip's CLIP BPE tokenizer (ships inside open_clip, so it works offline)."""

    def __init__(self, model_name: str, context_length: int) -> None:
        import open_clip
        from open_clip.tokenizer import SimpleTokenizer

        tokenizer = open_clip.get_tokenizer(model_name, context_length=context_length)
        if not isinstance(tokenizer, SimpleTokenizer):
            raise TokenizerError(
                f"open_clip model {model_name!r} uses a {type(tokenizer).__name__}, which "
                "domainvlm does not wrap; use its Hugging Face tokenizer as 'hf:<id>' instead"
            )
        self._tok = tokenizer
        self.name = f"openclip:{model_name}"
        self.context_length = context_length
        self.vocab_size = tokenizer.vocab_size
        self.pad_id = 0
        self.mask_id: int | None = None
        self.sot_id, self.eot_id = tokenizer.sot_token_id, tokenizer.eot_token_id
        self.special_ids = frozenset({self.sot_id, self.eot_id})

    def __call__(self, texts: Sequence[str] | str) -> Tensor:
        return self._tok(_as_list(texts))

    def _content(self, ids: Sequence[int]) -> list[int]:
        """Ids between start and end of text (pad is id 0, which is also the BPE token '!')."""
        ids = [int(i) for i in ids]
        end = ids.index(self.eot_id) if self.eot_id in ids else len(ids)
        return [i for i in ids[:end] if i != self.sot_id]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(self._content(ids)).strip()

    def word_ids(self, ids: Sequence[int]) -> list[int | None]:
        """A BPE token ending in ``</w>`` closes a word."""
        ids = [int(i) for i in ids]
        content_end = (ids.index(self.eot_id) if self.eot_id in ids else len(ids)) - 1
        out: list[int | None] = [None] * len(ids)
        word, open_word = -1, False
        for position, token_id in enumerate(ids):
            if token_id in self.special_ids or position > content_end:
                continue
            if not open_word:
                word += 1
            out[position] = word
            open_word = not self._tok.decoder[token_id].endswith("</w>")
        return out


class HFTokenizer:
    """A transformers tokenizer loaded from a local folder or a hub id."""

    def __init__(self, source: str, context_length: int, name: str | None = None) -> None:
        from transformers import AutoTokenizer

        path = Path(source).expanduser()
        looks_local = source.startswith(("/", ".", "~")) or path.exists()
        if looks_local and not path.is_dir():
            raise TokenizerError(f"tokenizer folder {source!r} does not exist or is not a folder")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path) if looks_local else source)
        except (OSError, ValueError) as error:
            raise TokenizerError(
                f"could not load a Hugging Face tokenizer from {source!r}: {error}. Offline, pass "
                "a folder written by save_pretrained"
            ) from error
        special = frozenset(tokenizer.all_special_ids)
        if len(tokenizer) <= len(special):
            raise TokenizerError(
                f"the tokenizer from {source!r} has no tokens beyond its special tokens: its "
                "vocabulary file was not read (transformers 5 ignores vocab_file= on the *Fast "
                "classes; save it with save_pretrained so tokenizer.json is written)"
            )
        if tokenizer.pad_token_id is None:
            raise TokenizerError(f"the tokenizer from {source!r} defines no pad token")
        self._tok = tokenizer
        self.name = name or f"hf:{source}"
        self.context_length = context_length
        self.vocab_size = len(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id)
        self.mask_id = tokenizer.mask_token_id
        self.special_ids = special

    def __call__(self, texts: Sequence[str] | str) -> Tensor:
        encoded = self._tok(
            _as_list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return encoded["input_ids"].long()

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def word_ids(self, ids: Sequence[int]) -> list[int | None]:
        """Word starts are read from token spellings, by the tokenizer's decoder family."""
        starts_word = self._word_start_rule()
        out: list[int | None] = [None] * len(ids)
        word, previous_special = -1, True
        ids = [int(i) for i in ids]
        for position, (token_id, token) in enumerate(
            zip(ids, self._tok.convert_ids_to_tokens(ids))
        ):
            if token_id in self.special_ids:
                previous_special = True
                continue
            if previous_special or starts_word(token):
                word += 1
            out[position] = word
            previous_special = False
        return out

    def _word_start_rule(self) -> Callable[[str], bool]:
        decoder = getattr(getattr(self._tok, "backend_tokenizer", None), "decoder", None)
        kind = type(decoder).__name__
        if kind == "WordPiece":
            prefix = decoder.prefix
            return lambda token: not token.startswith(prefix)
        if kind == "ByteLevel":
            return lambda token: token.startswith("Ġ")
        if kind == "Metaspace":
            replacement = decoder.replacement
            return lambda token: token.startswith(replacement)
        raise TokenizerError(
            f"whole-word grouping is not implemented for {self.name!r} (decoder {kind}); "
            "supported: WordPiece, ByteLevel BPE, Metaspace (SentencePiece)"
        )


def build_tokenizer(spec: str, context_length: int = 77) -> Tokenizer:
    if spec == "multilingual":
        return ByteTokenizer(context_length)
    if spec.startswith("openclip:"):
        return _build_openclip(spec.removeprefix("openclip:"), context_length)
    if spec.startswith("hf:") and len(spec) > 3:
        return HFTokenizer(spec.removeprefix("hf:"), context_length)
    raise TokenizerError(
        f"unknown tokenizer spec {spec!r}; expected 'multilingual', 'openclip:<model-name>' "
        "(e.g. 'openclip:ViT-B-32') or 'hf:<local-folder-or-hub-id>'"
    )


def _build_openclip(model_name: str, context_length: int) -> Tokenizer:
    import open_clip

    config = open_clip.get_model_config(model_name)
    if config is None:
        raise TokenizerError(
            f"open_clip has no model config named {model_name!r} (see open_clip.list_models())"
        )
    hf_name = config.get("text_cfg", {}).get("hf_tokenizer_name")
    if hf_name:
        return HFTokenizer(hf_name, context_length, name=f"openclip:{model_name}")
    return OpenClipBPETokenizer(model_name, context_length)


def whole_word_mask(
    token_ids: Tensor,
    tokenizer: Tokenizer,
    ratio: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT-style whole-word masking: pick ``ratio`` of each text's words (at least one).

    Every token of a picked word gets a label; the token becomes ``mask_id`` (80 %), a random
    non-special token (10 %) or stays (10 %). Unpicked positions get label -100.
    """
    if tokenizer.mask_id is None:
        raise TokenizerError(f"tokenizer {tokenizer.name!r} has no mask token; cannot mask words")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    if token_ids.ndim not in (1, 2):
        raise ValueError(f"token_ids must be [L] or [B, L], got {tuple(token_ids.shape)}")
    rows = token_ids.reshape(-1, token_ids.shape[-1]).cpu()
    masked = rows.clone()
    labels = torch.full_like(rows, IGNORE_INDEX)
    allowed = torch.ones(tokenizer.vocab_size, dtype=torch.bool)
    allowed[sorted(tokenizer.special_ids)] = False
    replacements = allowed.nonzero().squeeze(1)
    for row, ids in enumerate(rows.tolist()):
        words = tokenizer.word_ids(ids)
        n_words = 1 + max((w for w in words if w is not None), default=-1)
        if n_words == 0:
            continue
        n_pick = min(n_words, max(1, round(ratio * n_words)))
        picked = set(torch.randperm(n_words, generator=generator)[:n_pick].tolist())
        positions = torch.tensor([i for i, w in enumerate(words) if w in picked])
        labels[row, positions] = rows[row, positions]
        draw = torch.rand(len(positions), generator=generator)
        masked[row, positions[draw < 0.8]] = tokenizer.mask_id
        randomised = positions[(draw >= 0.8) & (draw < 0.9)]
        choice = torch.randint(len(replacements), (len(randomised),), generator=generator)
        masked[row, randomised] = replacements[choice]
    device = token_ids.device
    return masked.reshape(token_ids.shape).to(device), labels.reshape(token_ids.shape).to(device)
