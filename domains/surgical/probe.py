"""Linear probe and few-shot phase recognition on frozen frame features (the papers' second table).

    domainvlm eval probe --checkpoint C --data ROOT [--shots 1] [--table]

Frames at 1 fps of the training videos (``--shots N``: the first N of them, the papers' few-shot
setting; 0 = all) are embedded once by the frozen image tower; a linear classifier (softmax
regression, L2-normalised features, full-batch L-BFGS with weight decay) is fit on them and scored
on the test videos with the zero-shot protocol: accuracy and macro-F1 per video, averaged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from domainvlm.domains.surgical.evaluation_data import zeroshot_data


def fit_linear_probe(
    features: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float
) -> torch.nn.Linear:
    """Softmax regression by L-BFGS: deterministic, no learning rate to tune."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(features.shape[1], classes)
    optimiser = torch.optim.LBFGS(probe.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(features), labels)
        loss = loss + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return probe


def run(args: argparse.Namespace) -> dict:
    from domainvlm.core.metrics import grouped_metrics
    from domainvlm.core.retrieval import embed_images
    from domainvlm.domains.surgical.public_checkpoints import load_eval_encoder

    if args.shots < 0:
        raise ValueError(f"--shots must be 0 (all) or positive, got {args.shots}")
    encoder = load_eval_encoder(args.checkpoint, args.device, getattr(args, "bert_dir", None))
    root = Path(args.data)
    train = zeroshot_data(root, args.train_split, "en")
    videos = list(dict.fromkeys(train.groups))
    keep = set(videos[: args.shots] if args.shots else videos)
    rows = [i for i, group in enumerate(train.groups) if group in keep]
    features = embed_images(encoder, [train.paths[i] for i in rows], args.batch_size)
    labels = torch.tensor([train.labels[i] for i in rows])
    probe = fit_linear_probe(features, labels, len(train.classnames), args.weight_decay)
    test = zeroshot_data(root, args.split, "en")
    with torch.no_grad():
        predictions = probe(embed_images(encoder, test.paths, args.batch_size)).argmax(dim=1)
    result = {"task": "probe", "train_videos": len(keep), "train_frames": len(rows)}
    result["protocol"] = "linear probe on frozen frame features; " + test.protocol.split(": ", 1)[1]
    return result | grouped_metrics(predictions, test.labels, test.groups)


def format_table(result: dict) -> str:
    return (
        f"linear probe ({result['train_videos']} training videos, {result['train_frames']} frames): "
        f"accuracy {100 * result['mean_group_accuracy']:.1f} %, macro-F1 "
        f"{100 * result['mean_group_macro_f1']:.1f} % (per video, averaged over "
        f"{result['num_groups']})"
    )
