"""The surgical domain's own ``domainvlm eval`` tasks: ``phases`` (per-video table, confusion matrix,
timeline) and ``tools`` (zero-shot tool presence and CholecT50 triplet-component mAP).

    domainvlm eval phases --checkpoint C --data ROOT --table --timeline t.png --confusion-matrix c.png
    domainvlm eval tools --checkpoint C --data ROOT --table

Tool and triplet scores are ``sigmoid(cosine)`` against one prompt per class (the ranking, hence AP,
is that of the cosine). Cholec80 tools: AP per tool over every annotated second of the split, and
mAP over tools. CholecT50: AP per class over the classes present in a video, mAP per video, then
averaged over videos, for instrument (i), verb (v), target (t) and triplet (ivt).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from domainvlm.domains.surgical.cholect50 import COMPONENTS, read_cholect50
from domainvlm.domains.surgical.evaluation_data import phase_videos, video_phases, zeroshot_data
from domainvlm.domains.surgical.phases import CHOLEC80_TOOLS, read_tool_file
from domainvlm.domains.surgical.templates import TOOL_PROMPTS
from domainvlm.domains.surgical.video import SurgicalDataError

if TYPE_CHECKING:
    from domainvlm.core.encoder import Encoder

PHASE_COLOURS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1")


def _encoder(args: argparse.Namespace) -> Encoder:
    from domainvlm.domains.surgical.public_checkpoints import load_eval_encoder

    return load_eval_encoder(args.checkpoint, args.device, getattr(args, "bert_dir", None))


# -- phases ---------------------------------------------------------------------------------------


def run_phases(args: argparse.Namespace) -> dict:
    import torch
    from domainvlm.core.metrics import confusion_matrix, grouped_metrics
    from domainvlm.core.plots import confusion_matrix_png
    from domainvlm.core.zeroshot import ZeroShotClassifier

    data = zeroshot_data(Path(args.data), args.split, "en")
    classifier = ZeroShotClassifier(_encoder(args), batch_size=args.batch_size)
    predictions = classifier.logits(data.paths, data.classnames, data.templates).argmax(dim=1)
    result = {"task": "phases", "protocol": data.protocol, "classes": data.classnames}
    result |= grouped_metrics(predictions, data.labels, data.groups)
    result["pooled_acc1"] = (predictions == torch.as_tensor(data.labels)).double().mean().item()
    result["chance"] = 1.0 / len(data.classnames)
    if args.confusion_matrix:
        matrix = confusion_matrix(predictions, data.labels, len(data.classnames))
        result["confusion_matrix"] = str(
            confusion_matrix_png(matrix, data.classnames, args.confusion_matrix)
        )
    if args.timeline:
        ribbons = {}
        for group in dict.fromkeys(data.groups):
            rows = [i for i, g in enumerate(data.groups) if g == group]
            ribbons[group] = ([data.labels[i] for i in rows], predictions[rows].tolist())
        result["timeline"] = str(timeline_png(ribbons, data.classnames, args.timeline))
    return result


def format_phases(result: dict) -> str:
    lines = [f"{'video':<12} {'frames':>6} {'accuracy':>9} {'macro-F1':>9}"]
    for video, row in result["per_group"].items():
        lines.append(
            f"{video:<12} {row['num_samples']:>6} {100 * row['accuracy']:>9.1f} {100 * row['macro_f1']:>9.1f}"
        )
    lines.append(
        f"{'mean':<12} {'':>6} {100 * result['mean_group_accuracy']:>9.1f} "
        f"{100 * result['mean_group_macro_f1']:>9.1f}   (chance {100 * result['chance']:.1f})"
    )
    written = [f"{key}: {result[key]}" for key in ("confusion_matrix", "timeline") if key in result]
    return "\n".join([f"phases (percent): {result['protocol']}", *lines, *written])


def timeline_png(
    ribbons: dict[str, tuple[list[int], list[int]]], classnames: list[str], path: Path
) -> Path:
    """One ribbon pair per video, ground truth above prediction, one colour per phase."""
    from domainvlm.core.files import atomic_save
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = ListedColormap(
        [PHASE_COLOURS[i % len(PHASE_COLOURS)] for i in range(len(classnames))]
    )
    figure = Figure(figsize=(10, 0.9 * len(ribbons) + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(ribbons), 1, squeeze=False)[:, 0]
    for ax, (video, (truth, predicted)) in zip(axes, ribbons.items()):
        ax.imshow(
            np.array([truth, predicted]),
            aspect="auto",
            cmap=colours,
            vmin=0,
            vmax=len(classnames) - 1,
            interpolation="nearest",
        )
        ax.set_yticks([0, 1], ["truth", "predicted"])
        ax.set_ylabel(video, rotation=0, ha="right", va="center")
        ax.set_xticks([])
    axes[-1].set_xlabel("seconds (one frame per second)")
    axes[-1].set_xticks(np.arange(0, len(truth), 10))
    figure.legend(
        handles=[Patch(color=colours(i), label=name) for i, name in enumerate(classnames)],
        loc="outside lower center",
        ncols=min(4, len(classnames)),
        fontsize=8,
    )
    atomic_save(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    return Path(path)


# -- tools ----------------------------------------------------------------------------------------


def present_class_map(scores: np.ndarray, targets: np.ndarray) -> tuple[float, list[float]]:
    """AP per class that has a positive, and their mean (CholecT50's per-video convention)."""
    from domainvlm.core.metrics import mean_average_precision

    columns = np.flatnonzero(targets.sum(axis=0) > 0)
    per_class = [mean_average_precision(scores[:, [c]], targets[:, [c]]) for c in columns]
    return float(np.mean(per_class)) if per_class else float("nan"), per_class


def run_tools(args: argparse.Namespace) -> dict:
    import torch
    from domainvlm.core.metrics import mean_average_precision
    from domainvlm.core.retrieval import embed_images, embed_texts

    encoder = _encoder(args)
    root = Path(args.data)
    prompts = embed_texts(encoder, [TOOL_PROMPTS[t] for t in CHOLEC80_TOOLS])
    paths, targets = [], []
    for video_id in phase_videos(root, args.split):
        video, _ = video_phases(root, video_id)
        tools = read_tool_file(root / "tool_annotations" / f"{video_id}-tool.txt")
        if tools.tools != CHOLEC80_TOOLS:
            raise SurgicalDataError(
                root / "tool_annotations" / f"{video_id}-tool.txt",
                f"tools must be {CHOLEC80_TOOLS}",
            )
        paths += [f"{video}#t={t:g}" for t in tools.times]
        targets.append(tools.presence)
    scores = torch.sigmoid(embed_images(encoder, paths, args.batch_size) @ prompts.T)
    target = torch.as_tensor(np.concatenate(targets))
    per_tool = {
        tool: mean_average_precision(scores[:, [i]], target[:, [i]])
        for i, tool in enumerate(CHOLEC80_TOOLS)
    }
    result: dict = {
        "task": "tools",
        "tool_ap": per_tool,
        "tool_map": float(np.mean(list(per_tool.values()))),
    }
    result["tool_frames"] = len(paths)
    label_dir = root / "cholect50" / "labels"
    if label_dir.is_dir() and not args.no_cholect50:
        result["cholect50"] = cholect50_map(encoder, root / "cholect50", args.batch_size)
    return result


def _component_prompts(component: str, names: list[str]) -> list[str]:
    words = [
        name.replace("_", " ").replace("null verb", "wait").replace("null target", "nothing")
        for name in names
    ]
    if component == "instrument":
        return [f"I use {w}" for w in words]
    if component == "verb":
        return [f"I {w}" for w in words]
    if component == "target":
        return [f"the {w}" for w in words]
    return [f"I use {i} to {v} the {t}" for i, v, t in (w.split(",") for w in words)]


def cholect50_map(encoder: Encoder, root: Path, batch_size: int) -> dict:
    """mAP per video over present classes, averaged over videos, per component."""
    import torch
    from domainvlm.core.retrieval import embed_images, embed_texts

    per_video: dict[str, list[float]] = {component: [] for component in COMPONENTS}
    for label_file in sorted((root / "labels").glob("*.json")):
        labels = read_cholect50(label_file)
        folder = root / "videos" / label_file.stem
        paths = [folder / f"{frame:06d}.png" for frame in labels.frames]
        images = embed_images(encoder, paths, batch_size)
        for component in COMPONENTS:
            prompts = embed_texts(encoder, _component_prompts(component, labels.names[component]))
            scores = torch.sigmoid(images @ prompts.T).numpy()
            value, _ = present_class_map(scores, labels.presence[component])
            if not np.isnan(value):
                per_video[component].append(value)
    short = {"instrument": "i", "verb": "v", "target": "t", "triplet": "ivt"}
    return {f"map_{short[c]}": float(np.mean(v)) if v else None for c, v in per_video.items()}


def format_tools(result: dict) -> str:
    lines = ["tool presence AP (percent)"]
    lines += [f"  {tool:<12} {100 * ap:5.1f}" for tool, ap in result["tool_ap"].items()]
    lines.append(
        f"  {'mAP':<12} {100 * result['tool_map']:5.1f}   ({result['tool_frames']} frames)"
    )
    if "cholect50" in result:
        cells = ", ".join(
            f"{k} {100 * v:.1f}" for k, v in result["cholect50"].items() if v is not None
        )
        lines.append(f"CholecT50 mAP per video, averaged (percent): {cells}")
    return "\n".join(lines)
