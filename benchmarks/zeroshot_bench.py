"""Images/s of ZeroShotClassifier.predict against bare open_clip encode_image + matmul + softmax.

Both run on the same model, batch and class weights in one process, interleaved round by round so
machine load hits both alike; the ratio (ours / bare) shows what the API layer costs. A third side,
the classifier on the same weights under bf16 autocast (``--precision bf16``), gives the bf16
column against fp32. Prints one JSON line. Default model: dvlm-tiny (offline); pass --model openclip:ViT-B-32 for a real-size tower
(random weights: speed does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from domainvlm.core.encoder_loader import load_encoder
from domainvlm.core.zeroshot import LOGIT_SCALE, ZeroShotClassifier
from torch import Tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="openclip:dvlm-tiny", help="encoder spec (open_clip)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=45, help="RESISC45 has 45")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    encoder = load_encoder(args.model)
    torch.manual_seed(0)
    bf16_encoder = load_encoder(args.model, precision="bf16")
    bf16_encoder.modules[0].load_state_dict(encoder.modules[0].state_dict())
    (model,) = encoder.modules
    size = encoder.preprocessing["image_size"]
    images = torch.randn(args.batch, 3, size, size)
    classnames = [f"class {i}" for i in range(args.classes)]
    templates = ["a satellite photo of {}.", "a satellite image of {}"]
    classifier = ZeroShotClassifier(encoder, batch_size=args.batch)
    weights = classifier.class_weights(classnames, templates)  # cached, as in a serving loop
    bf16_classifier = ZeroShotClassifier(bf16_encoder, batch_size=args.batch)
    bf16_classifier.class_weights(classnames, templates)

    @torch.no_grad()
    def bare() -> Tensor:
        features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        return (LOGIT_SCALE * features @ weights.T).softmax(dim=-1)

    def ours() -> list:
        return classifier.predict(images, classnames, templates, top_k=5)

    def ours_bf16() -> list:
        return bf16_classifier.predict(images, classnames, templates, top_k=5)

    sides = (("bare", bare), ("ours", ours), ("bf16", ours_bf16))
    for _, run in sides + sides:  # warm-up
        run()
    times: dict[str, list[float]] = {"bare": [], "ours": [], "bf16": []}
    for _ in range(args.rounds):
        for name, run in sides:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    bare_ips = args.batch / statistics.median(times["bare"])
    ours_ips = args.batch / statistics.median(times["ours"])
    bf16_ips = args.batch / statistics.median(times["bf16"])
    bf16_ratios = [fp32 / bf16 for fp32, bf16 in zip(times["ours"], times["bf16"])]
    result = {
        "benchmark": "zeroshot_classifier_vs_open_clip",
        "model": args.model,
        "image_size": size,
        "batch": args.batch,
        "classes": args.classes,
        "threads": args.threads,
        "rounds": args.rounds,
        "open_clip_images_per_s": round(bare_ips, 1),
        "classifier_images_per_s": round(ours_ips, 1),
        "ratio": round(ours_ips / bare_ips, 3),
        "classifier_bf16_images_per_s": round(bf16_ips, 1),
        "bf16_over_fp32": round(statistics.median(bf16_ratios), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
