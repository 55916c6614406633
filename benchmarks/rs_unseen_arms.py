"""The generalised zero-shot arms of ``rs_semantic_experts.py --task unseen``, for one tower.

For one RS-M-CLIP checkpoint (a "tower") and one seed: the towers alone classify the unseen
chips by class name or by knowledge-base descriptions (both embeddings of
``open_vocabulary.EMBEDDINGS``); then the open-vocabulary semantic experts
(``semantic_experts_open.yaml``, ``head: joint``) are fitted three times on the seen classes, with
retrieval off, on, and on with a knowledge base that leaves out the 14 evaluated classes, and
score seen and unseen classes together, uncalibrated and with calibrated stacking (γ from
seen-class validation images only, or from a held-out split that has unseen images too).
Presence questions ("Is there a bridge?") are answered "yes" when that class wins.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
import torch
import yaml
from domainvlm.core.encoder_loader import load_encoder_and_system
from domainvlm.core.towers.tokens import encode_with_patch_tokens
from domainvlm.domains.remote_sensing import open_vocabulary as ov
from domainvlm.domains.remote_sensing.datamodule import RSSceneDataModule
from domainvlm.domains.remote_sensing.knowledge import concept_for_label, knowledge_records
from domainvlm.domains.remote_sensing.scenes import SceneFolderDataset
from domainvlm.domains.remote_sensing.system import SemanticExpertsSystem, raster_loader
from domainvlm.domains.remote_sensing.templates import templates
from domainvlm.domains.remote_sensing.unseen import write_unseen

ARMS = ("off", "on", "leave_out")
CALIBRATIONS = ("none", "seen_only", "held_out")
SEEN_TOLERANCE = 0.05
"""``gamma_seen_only``: the seen-class validation accuracy given up for the unseen classes."""


def split(root: Path, name: str, dataset: str) -> dict:
    data = SceneFolderDataset(root, name)
    concepts = [concept_for_label(dataset, folder) for folder in data.folder_names]
    return {
        "paths": [str(path) for path, _ in data.samples],
        "labels": torch.tensor(data.labels),
        "concepts": [c.id for c in concepts],
        "names": [c.names["en"] for c in concepts],
    }


def tower_zero_shot(tower: str, test: dict, held_out: dict, unseen_ids: list[str]) -> tuple:
    """Unseen-only accuracy of the towers alone by names and by descriptions (each embedding),
    the embedding that wins on the held-out chips, and every unseen class-vector set."""
    encoder, system = load_encoder_and_system(tower)
    system.eval()

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding, tokens = encode_with_patch_tokens(system.model.visual, images)
        return embedding, tokens @ system.model.visual.proj

    names = ov.name_weights(encoder, test["names"], templates("en"))
    vectors = {"names": names}
    for embedding in ov.EMBEDDINGS:
        knowledge = ov.embed_knowledge(encoder, knowledge_records(), embedding)
        vectors[f"descriptions[{embedding}]"] = ov.description_weights(
            encoder, knowledge, unseen_ids, names
        )
    result = {}
    for part, data in (("test", test), ("held_out", held_out)):
        features = ov.image_features(data["paths"], encoder.load_image, encode)
        for arm, weights in vectors.items():
            accuracy = ov.accuracy(ov.logits(features.embedding, weights), data["labels"])
            result.setdefault(part, {})[arm] = round(100 * accuracy, 2)
    chosen = max(ov.EMBEDDINGS, key=lambda e: result["held_out"][f"descriptions[{e}]"])
    vectors["descriptions"] = vectors[f"descriptions[{chosen}]"]
    return result, chosen, vectors


def fit_experts(config: dict, tower: str, arm: str, seed: int, root: Path, excluded: list[str]):
    args = {**config["model"]["init_args"], "init_from": tower, "use_retrieval": arm != "off"}
    if arm == "leave_out":
        args["knowledge_exclude"] = excluded
    L.seed_everything(seed, verbose=False)
    datamodule = RSSceneDataModule(**{**config["data"]["init_args"], "root": str(root)})
    system = SemanticExpertsSystem(**args)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=config["trainer"]["max_epochs"],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(system, datamodule)
    return system.eval()


@torch.no_grad()
def experts_logits(system: SemanticExpertsSystem, paths: list[str], class_vectors) -> torch.Tensor:
    load = raster_loader(system.preprocessing)
    rows = []
    for start in range(0, len(paths), 64):
        images = torch.stack([load(p) for p in paths[start : start + 64]])
        features, _, anchor = system.fuse(images, [system.hparams.task_prompt] * len(images))
        rows.append(system.joint_logits(features, anchor, class_vectors))
    return torch.cat(rows)


def presence(scores: torch.Tensor, questions: list[dict], index: dict, column: dict) -> float:
    top = scores.argmax(dim=1)
    right = [
        (int(top[index[q["image"]]]) == column[q["concept"]]) == (q["answer"] == "yes")
        for q in questions
    ]
    return round(100 * sum(right) / len(right), 2)


def run_tower(tower: str, seed: int, data: Path, work: Path, config_path: Path, per_class: int):
    """Every arm for one tower and seed: a dict of percentages (and the γ used)."""
    started = time.process_time()
    write_unseen(work / f"test{seed}", per_class, seed)
    write_unseen(work / f"held_out{seed}", per_class, 100 + seed)
    seen = {part: split(data / "scene_classes", part, "EuroSAT") for part in ("test", "val")}
    unseen = {
        part: split(work / f"{part}{seed}" / "unseen" / "scene_classes", "test", "RESISC45")
        for part in ("test", "held_out")
    }
    unseen_ids = unseen["test"]["concepts"]
    tower_result, chosen, unseen_vectors = tower_zero_shot(
        tower, unseen["test"], unseen["held_out"], unseen_ids
    )
    config = yaml.safe_load(config_path.read_text())
    excluded = seen["test"]["concepts"] + unseen_ids
    n_seen = len(seen["test"]["concepts"])
    columns = set(range(n_seen, n_seen + len(unseen_ids)))
    questions = json.loads((work / f"test{seed}" / "unseen" / "presence.json").read_text())
    chips = work / f"test{seed}" / "unseen" / "scene_classes"
    n_seen_test = len(seen["test"]["paths"])
    row_of = {  # presence questions name their image; rows of the test scores follow the seen
        str(Path(path).relative_to(chips)): n_seen_test + i
        for i, path in enumerate(unseen["test"]["paths"])
    }
    column = {concept: n_seen + i for i, concept in enumerate(unseen_ids)}
    experts = {}
    for arm in ARMS:
        system = fit_experts(config, tower, arm, seed, data, excluded)
        closed = experts_logits(system, seen["test"]["paths"], system.class_vectors)
        result = {"seen_closed_set": round(100 * ov.accuracy(closed, seen["test"]["labels"]), 2)}
        for kind in ("names", "descriptions"):
            vectors = torch.cat([system.class_vectors, unseen_vectors[kind]])
            scores = {
                (set_, part): experts_logits(system, sets[part]["paths"], vectors)
                for set_, sets in (("seen", seen), ("unseen", unseen))
                for part in sets
            }
            unseen_labels = unseen["test"]["labels"] + n_seen
            zsl = ov.accuracy(scores["unseen", "test"][:, n_seen:], unseen["test"]["labels"])
            val = scores["seen", "val"]
            held = torch.cat([val, scores["unseen", "held_out"]])
            held_labels = torch.cat([seen["val"]["labels"], unseen["held_out"]["labels"] + n_seen])
            gammas = {
                "none": 0.0,
                "seen_only": ov.gamma_seen_only(
                    val, seen["val"]["labels"], columns, SEEN_TOLERANCE
                ),
                "held_out": ov.gamma_held_out(held, held_labels, columns),
            }
            test_scores = torch.cat([scores["seen", "test"], scores["unseen", "test"]])
            test_labels = torch.cat([seen["test"]["labels"], unseen_labels])
            entry = {"zsl_unseen": round(100 * zsl, 2)}
            for calibration, gamma in gammas.items():
                shifted = ov.calibrated(test_scores, columns, gamma)
                gzsl = ov.generalised_accuracies(shifted, test_labels, columns)
                entry[calibration] = {
                    **{key: round(100 * value, 2) for key, value in gzsl.items()},
                    "gamma": round(gamma, 3),
                    "presence": presence(shifted, questions["questions"], row_of, column),
                }
            result[kind] = entry
        experts[arm] = result
    return {
        "tower": tower,
        "seed": seed,
        "description_embedding_chosen_on_held_out": chosen,
        "tower_zero_shot_unseen": tower_result,
        "experts": experts,
        "cpu_s": round(time.process_time() - started, 1),
    }
