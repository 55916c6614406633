"""CholecT50 action-triplet labels: ``labels/VIDnn.json`` beside 1-fps frames ``videos/VIDnn/``.

A label file holds ``video, fps, num_frames, categories{triplet, instrument, verb, target, phase}``
(each ``{"<id>": "<name>"}``) and ``annotations{"<frame>": [[15 values], ...]}``. The 15 values of
one instance: ``[ivt, i, i_score, bx, by, bw, bh, v, t, t_score, bx, by, bw, bh, phase]``, −1 = null.
A frame without instances is an empty list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from domainvlm.domains.surgical.video import SurgicalDataError

COMPONENTS = ("triplet", "instrument", "verb", "target")
COLUMN = {"triplet": 0, "instrument": 1, "verb": 7, "target": 8}


@dataclass(frozen=True)
class TripletLabels:
    """Multi-hot presence per frame for each component, and the names of its classes."""

    video: str
    fps: float
    frames: np.ndarray
    """Frame numbers (at ``fps``) that have an annotation entry, sorted."""
    presence: dict[str, np.ndarray]
    """Component → ``[frames, classes]`` 0/1."""
    names: dict[str, list[str]]
    phases: np.ndarray
    """Phase id per frame (−1 when no instance names one)."""


def read_cholect50(path: str | Path) -> TripletLabels:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SurgicalDataError(path, f"not a readable CholecT50 label file ({exc})") from exc
    try:
        categories = data["categories"]
        names = {
            component: [categories[component][str(i)] for i in range(len(categories[component]))]
            for component in COMPONENTS
        }
        annotations = data["annotations"]
        fps = float(data.get("fps", 1))
    except (KeyError, TypeError, AttributeError) as exc:
        raise SurgicalDataError(
            path,
            f"needs categories{{triplet,instrument,verb,target}} with ids 0..n-1 and annotations ({exc!r})",
        ) from exc
    frames = sorted(int(frame) for frame in annotations)
    presence = {c: np.zeros((len(frames), len(names[c])), np.int64) for c in COMPONENTS}
    phases = np.full(len(frames), -1, np.int64)
    for row, frame in enumerate(frames):
        for number, instance in enumerate(annotations[str(frame)]):
            if not isinstance(instance, list) or len(instance) != 15:
                raise SurgicalDataError(
                    path, f"frame {frame} instance {number}: expected a list of 15 values"
                )
            for component in COMPONENTS:
                value = int(instance[COLUMN[component]])
                if value >= len(names[component]):
                    raise SurgicalDataError(
                        path, f"frame {frame}: {component} id {value} is not among the categories"
                    )
                if value >= 0:
                    presence[component][row, value] = 1
            if int(instance[14]) >= 0:
                phases[row] = int(instance[14])
    return TripletLabels(
        str(data.get("video", path.stem)), fps, np.asarray(frames), presence, names, phases
    )
