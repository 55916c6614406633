"""How often the semantic experts' scene-level cue names the right scene, per knowledge embedding.

The experts can only profit from knowledge whose vectors sit near the images they describe. For
each ``knowledge_prompts`` mode this embeds the knowledge base with a trained RS-M-CLIP checkpoint,
retrieves the top scene concept for every held-out image of the class-folder set (among all
scene-level concepts, not only the dataset's classes) and prints one JSON line with the top-1 and
top-4 hit rates. Run after ``domainvlm fit --config configs/remote_sensing/tiny.yaml``.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from domainvlm.core.checkpoint import read_checkpoint
from domainvlm.core.system import CHECKPOINT_KEY
from domainvlm.domains.remote_sensing.datamodule import RSSceneDataModule
from domainvlm.domains.remote_sensing.knowledge import load_concepts
from domainvlm.domains.remote_sensing.system import SemanticExpertsSystem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/remote_sensing/tiny/checkpoints/last.ckpt")
    parser.add_argument("--data", default="data/samples/remote_sensing")
    parser.add_argument("--dataset", default="EuroSAT", help="whose class labels the folders use")
    args = parser.parse_args()
    torch.set_num_threads(1)

    trained = read_checkpoint(args.checkpoint)[CHECKPOINT_KEY]["init_args"]
    preprocessing = trained["preprocessing"]
    datamodule = RSSceneDataModule(
        root=args.data,
        bands=preprocessing["bands"],
        image_size=preprocessing["image_size"],
        mean=preprocessing["mean"],
        std=preprocessing["std"],
        max_pixel_value=preprocessing["max_pixel_value"],
    )
    concept_of_label = {
        concept.labels[args.dataset].casefold(): concept.id
        for concept in load_concepts()
        if args.dataset in concept.labels
    }
    classes = [concept_of_label[name.replace(" ", "").casefold()] for name in datamodule.classes()]
    result = {"checkpoint": args.checkpoint, "dataset": args.dataset}
    for mode in ("descriptions", "templates"):
        system = SemanticExpertsSystem(
            classes=classes,
            init_from=args.checkpoint,
            model_name=trained["model_name"],
            tokenizer=trained["tokenizer"],
            in_chans=trained["in_chans"],
            knowledge_prompts=mode,
        )
        system._trainer = type("Trainer", (), {"datamodule": datamodule})()
        system.setup("fit")
        system.eval()
        scene_rows = [i for i, r in enumerate(system.records) if r["level"] == "scene"]
        hits1 = hits4 = total = 0
        loader = torch.utils.data.DataLoader(datamodule.build_dataset("test"), batch_size=128)
        with torch.no_grad():
            for batch in loader:
                images = F.normalize(system.clip.encode_image(batch["image"]), dim=-1)
                top = (images @ system.knowledge_vectors[scene_rows].T).topk(4, dim=-1).indices
                for row, label in zip(top.tolist(), batch["label"].tolist()):
                    found = [system.records[scene_rows[j]]["concept"] for j in row]
                    hits1 += found[0] == classes[label]
                    hits4 += classes[label] in found
                    total += 1
        result[mode] = {"top1": round(hits1 / total, 3), "top4": round(hits4 / total, 3)}
    result["images"] = total
    result["scene_concepts"] = len(scene_rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
