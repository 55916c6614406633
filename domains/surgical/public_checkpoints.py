"""The public SurgVLP / HecVL / PeskaVLP weights as a domainvlm checkpoint.

The three releases share one layout: ``backbone_img.model.*`` (a torchvision ResNet-50; its ``fc``
is unused), ``backbone_img.global_embedder.{weight,bias}`` (linear 2048 → 768) and
``backbone_text.model.*`` (a Hugging Face ``BertModel``, Bio_ClinicalBERT). Ours is the open_clip
model ``surgvlp-rn50-bioclinicalbert``: ``visual.trunk.*`` (timm's ResNet-50, whose parameter names
are torchvision's), ``visual.head.proj``, ``text.transformer.*``, with the reference's text pooling
(``LastLayersSumPooler``). HecVL and PeskaVLP are the same modules under other class names
(the reference builds ``HecVL``/``PeskaVLP`` algorithms around the same ``backbone_img`` and
``backbone_text``); releases saved with transformers < 4.31 also hold BERT's
``embeddings.position_ids`` buffer, which BERT rebuilds and is dropped here. Convert once, then
evaluate like any checkpoint:

    python -m domainvlm.domains.surgical.public_checkpoints surgvlp.pth \\
        --bert-dir weights/Bio_ClinicalBERT --out runs/surgical/surgvlp_public.ckpt
    domainvlm eval phases --checkpoint runs/surgical/surgvlp_public.ckpt --data /data/cholec80

or let the surgical eval tasks convert in memory (``--bert-dir`` marks ``--checkpoint`` as a
release; ``configs/surgical/eval/{surgvlp,hecvl,peskavlp}.yaml``):

    domainvlm eval phases --config configs/surgical/eval/hecvl.yaml --data /data/cholec80

Evaluation preprocessing differs from the papers': they resize frames to 360×640 and centre-crop
224; the checkpoint here resizes the short side to 224 and centre-crops, so on 854×480 Cholec80
frames it sees the full height instead of the central 62 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from domainvlm.core.checkpoint import read_checkpoint
from domainvlm.core.encoder import Encoder
from domainvlm.core.errors import CheckpointError
from domainvlm.core.files import atomic_save
from domainvlm.domains.surgical.datamodule import IMAGENET_MEAN, IMAGENET_STD
from domainvlm.domains.surgical.system import SurgVLP
from torch import Tensor

PREFIXES = {
    "backbone_img.model.": "clip.visual.trunk.",
    "backbone_img.global_embedder.": "clip.visual.head.proj.",
    "backbone_text.model.": "clip.text.transformer.",
}
UNUSED = ("backbone_img.model.fc.", "backbone_text.model.pooler.")
"""The torchvision classifier and BERT's pooler: neither is part of the embeddings."""
STALE_BUFFERS = ("backbone_text.model.embeddings.position_ids",)
"""Saved by transformers < 4.31, a non-persistent buffer (rebuilt, never loaded) since."""


def map_public_state_dict(state: dict[str, Tensor], own: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys of the public layout → keys of ``SurgVLP.model`` (``own`` = its state dict).

    The frame tower is shared with the video tower, so each visual weight fills both names. Keys
    of ours the release lacks keep their values only if they are buffers the reference does not
    store (``position_ids``) or the unused logit scale; anything else missing is an error.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}  # DDP saves
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(UNUSED) or key in STALE_BUFFERS:
            continue
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        if prefix is None:
            raise CheckpointError(f"public checkpoint key {key!r} is not in the SurgVLP layout")
        target = PREFIXES[prefix] + key.removeprefix(prefix)
        if target not in own:
            raise CheckpointError(f"public checkpoint key {key!r} has no counterpart ({target!r})")
        mapped[target] = value
        if target.startswith("clip.visual."):
            mapped["video.frame_encoder." + target.removeprefix("clip.visual.")] = value
    missing = [
        k for k in own if k not in mapped and not k.endswith(("position_ids", "logit_scale"))
    ]
    if missing:
        raise CheckpointError(f"public checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    return {**own, **mapped}


def load_release(source: str | Path, bert_dir: str | Path, num_frames: int = 4) -> SurgVLP:
    """The paper model built offline (BERT config and tokenizer from ``bert_dir``) with a public
    release's weights (SurgVLP, HecVL or PeskaVLP ``.pth``), in eval mode."""
    checkpoint = read_checkpoint(source)
    state = checkpoint.get("state_dict", checkpoint)
    system = SurgVLP(
        model_name="surgvlp-rn50-bioclinicalbert",
        hf_text_dir=str(bert_dir),
        tokenizer=f"hf:{bert_dir}",
        context_length=77,
        preprocessing={
            "image_size": 224,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "num_frames": num_frames,
        },
    )
    system.model.load_state_dict(map_public_state_dict(state, system.model.state_dict()))
    return system.eval()


def convert(source: str | Path, bert_dir: str | Path, out: str | Path, num_frames: int = 4) -> Path:
    """Load a release (``load_release``) and save a checkpoint ``load_system`` rebuilds."""
    system = load_release(source, bert_dir, num_frames)
    saved = {"state_dict": system.state_dict()}
    system.on_save_checkpoint(saved)
    atomic_save(out, lambda handle: torch.save(saved, handle))
    return Path(out)


def load_eval_encoder(checkpoint: str, device: str = "cpu", bert_dir: str | None = None) -> Encoder:
    """The encoder of a surgical eval task: any encoder spec, or with ``bert_dir`` a public release
    file converted in memory."""
    from domainvlm.core.encoder_loader import load_encoder, resolve_device, system_encoder

    if not bert_dir:
        return load_encoder(checkpoint, device)
    path = Path(checkpoint).expanduser()
    return system_encoder(load_release(path, bert_dir), str(path.resolve()), resolve_device(device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the released .pth (SurgVLP, HecVL or PeskaVLP)")
    parser.add_argument(
        "--bert-dir", required=True, type=Path, help="Bio_ClinicalBERT folder (save_pretrained)"
    )
    parser.add_argument("--out", required=True, type=Path, help="domainvlm checkpoint to write")
    args = parser.parse_args(argv)
    print(convert(args.source, args.bert_dir, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
