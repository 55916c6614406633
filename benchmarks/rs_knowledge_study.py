"""Unseen remote-sensing classes: names alone vs knowledge-base descriptions vs retrieved cues.

A trained RS-M-CLIP checkpoint classifies the sample's ``unseen/`` chips (bridge, island, harbor,
wetland: named in no training caption) zero-shot, and the held-out seen test chips together with
them (generalised zero-shot), with every arm of ``domains/remote_sensing/open_vocabulary.py``,
and answers the presence questions ("Is there a bridge?" is "yes" when bridge wins among all 14
classes). Seeds redraw the unseen chips; the towers stay those of the checkpoint. Prints one JSON
line. Run after ``domainvlm fit --config configs/remote_sensing/tiny.yaml``; ~1 min per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch
from domainvlm.core.encoder_loader import load_encoder_and_system
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.domains.remote_sensing import open_vocabulary as ov
from domainvlm.domains.remote_sensing.knowledge import concept_for_label, knowledge_records
from domainvlm.domains.remote_sensing.scenes import SceneFolderDataset
from domainvlm.domains.remote_sensing.templates import templates
from domainvlm.domains.remote_sensing.unseen import UNSEEN_CLASSES, write_unseen


def folder_set(root: Path, dataset: str, lang: str) -> tuple[list[str], list[int], list, list]:
    """Paths, labels, concept ids and names (in ``lang``) of a class-folder test split."""
    data = SceneFolderDataset(root, "test")
    concepts = [concept_for_label(dataset, folder) for folder in data.folder_names]
    paths = [str(path) for path, _ in data.samples]
    return paths, list(data.labels), [c.id for c in concepts], [c.names[lang] for c in concepts]


def arms(features: ov.ImageFeatures, weights: dict, cues: dict, weight: float) -> dict:
    """Logits of every arm over all classes (slice columns for unseen-only zero-shot); each
    knowledge arm once per way of embedding the entries (``ov.EMBEDDINGS``)."""
    names = ov.logits(features.embedding, weights["names"])
    result = {"names": names, "retrieval_off|names": names}
    for embedding in ov.EMBEDDINGS:
        both = f"names+descriptions[{embedding}]"
        for kb in ("", "_kb_without_classes"):
            result[f"descriptions[{embedding}]{kb}"] = ov.logits(
                features.embedding, weights[f"descriptions{kb}", embedding]
            )
        result[both] = ov.logits(features.embedding, weights["both", embedding])
        result[f"retrieval_off|{both}"] = result[both]
        for kb in ("", "_kb_without_classes"):
            image = ov.augmented(features, cues[kb, embedding], weight)
            result[f"retrieval_on[{embedding}]{kb}|names"] = ov.logits(image, weights["names"])
            result[f"retrieval_on[{embedding}]{kb}|{both}"] = ov.logits(
                image, weights["both", embedding]
            )
    return result


def run_seed(args, seed: int, shared: dict) -> dict:
    unseen_root = Path(args.work) / f"seed{seed}"
    write_unseen(unseen_root, args.chips_per_class, seed)
    paths, labels, folder_concepts, _ = folder_set(
        unseen_root / "unseen" / "scene_classes", "RESISC45", "en"
    )
    unseen_features = ov.image_features(paths, shared["load_image"], shared["encode"])
    offset = len(shared["seen_concepts"])
    # folders come sorted by name; the classifier's columns follow UNSEEN_CLASSES
    unseen_labels = torch.tensor([shared["concepts"].index(folder_concepts[i]) for i in labels])
    features = ov.ImageFeatures(
        torch.cat([shared["seen_features"].embedding, unseen_features.embedding]),
        torch.cat([shared["seen_features"].patches, unseen_features.patches]),
    )
    all_labels = torch.cat([shared["seen_labels"], unseen_labels])
    cues = {
        (kb, embedding): ov.retrieved_cues(shared["knowledge"][kb, embedding], features)
        for kb in ("", "_kb_without_classes")
        for embedding in ov.EMBEDDINGS
    }
    n_seen = len(shared["seen_labels"])
    unseen_columns = list(range(offset, offset + len(UNSEEN_CLASSES)))
    presence = json.loads((unseen_root / "unseen" / "presence.json").read_text())["questions"]
    index_of = {path: n_seen + i for i, path in enumerate(paths)}
    concept_column = {c: i for i, c in enumerate(shared["concepts"])}
    out = {}
    for arm, scores in arms(features, shared["weights"], cues, args.weight).items():
        zsl = ov.accuracy(scores[n_seen:, unseen_columns], unseen_labels - offset)
        gzsl = ov.generalised_accuracies(scores, all_labels, set(unseen_columns))
        top = scores.argmax(dim=1)
        answered = [
            (
                int(top[index_of[str(unseen_root / "unseen" / "scene_classes" / q["image"])]])
                == concept_column[q["concept"]]
            )
            == (q["answer"] == "yes")
            for q in presence
        ]
        out[arm] = {
            "zsl_unseen": round(100 * zsl, 2),
            **{f"gzsl_{key}": round(100 * value, 2) for key, value in gzsl.items()},
            "presence": round(100 * sum(answered) / len(answered), 2),
        }
    return out


def summarise(runs: list[dict]) -> dict:
    summary = {}
    for arm in runs[0]:
        summary[arm] = {}
        for key in runs[0][arm]:
            values = [run[arm][key] for run in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary[arm][key] = f"{statistics.mean(values):.2f} ± {std:.2f}"
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/remote_sensing/tiny/checkpoints/last.ckpt")
    parser.add_argument("--data", default="data/samples/remote_sensing")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chips-per-class", type=int, default=20)
    parser.add_argument("--weight", type=float, default=1.0, help="λ of the retrieved cues")
    parser.add_argument("--work", default=None, help="where the unseen chips go (default: temp)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.work = args.work or tempfile.mkdtemp(prefix="rs_knowledge_study_")

    encoder, system = load_encoder_and_system(args.checkpoint)
    system.eval()

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, tokens = encode_with_patch_tokens(system.model.visual, images)
        return embedding, tokens @ system.model.visual.proj

    seen_paths, seen_labels, seen_concepts, seen_names = folder_set(
        Path(args.data) / "scene_classes", "EuroSAT", "en"
    )
    unseen_concepts = [concept_for_label("RESISC45", c) for c in UNSEEN_CLASSES]
    concepts = seen_concepts + [c.id for c in unseen_concepts]
    names = seen_names + [c.names["en"] for c in unseen_concepts]
    records = knowledge_records()
    kept = [r for r in records if r["concept"] not in concepts]
    name_vectors = ov.name_weights(encoder, names, templates("en"))
    knowledge, weights = {}, {"names": name_vectors}
    for embedding in ov.EMBEDDINGS:
        for kb, chosen in (("", records), ("_kb_without_classes", kept)):
            knowledge[kb, embedding] = ov.embed_knowledge(encoder, chosen, embedding)
            weights[f"descriptions{kb}", embedding] = ov.description_weights(
                encoder, knowledge[kb, embedding], concepts, name_vectors
            )
        both = name_vectors + weights["descriptions", embedding]
        weights["both", embedding] = torch.nn.functional.normalize(both, dim=-1)
    shared = {
        "load_image": encoder.load_image,
        "encode": encode,
        "seen_features": ov.image_features(seen_paths, encoder.load_image, encode),
        "seen_labels": torch.tensor(seen_labels),
        "seen_concepts": seen_concepts,
        "concepts": concepts,
        "knowledge": knowledge,
        "weights": weights,
    }
    runs = [run_seed(args, seed, shared) for seed in args.seeds]
    print(
        json.dumps(
            {
                "benchmark": "rs_knowledge_study",
                "checkpoint": args.checkpoint,
                "seeds": args.seeds,
                "unseen_classes": list(UNSEEN_CLASSES),
                "seen_test_images": len(seen_paths),
                "unseen_images_per_seed": args.chips_per_class * len(UNSEEN_CLASSES),
                "chance": {"zsl_unseen": 100 / len(UNSEEN_CLASSES), "presence": 50.0},
                "summary": summarise(runs),
                "runs": runs,
            },
            ensure_ascii=False,
        )
    )


if __name__ == "__main__":
    main()
