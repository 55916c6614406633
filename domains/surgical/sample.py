"""Offline sample: synthetic laparoscopic cholecystectomies in the SVL + Cholec80 + CholecT50 layouts.

Every video runs the 7 Cholec80 phases in order. Each phase is visible: its instruments (one colour
and shape per tool), their motion, and the state of an anatomy-like scene (a green gallbladder on
a dark-red liver, yellow cystic duct and artery that get clipped and cut, a white specimen bag,
bleeding, irrigation). Two narrations per video (``aws_``/``whisper_narration_texts``) describe the
phases with different sentence boundaries and paraphrases built from the vocabulary of the
published zero-shot prompts, so a model pretrained on them can be evaluated zero-shot with those
prompts. The data are synthetic and say so in README.txt.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
from domainvlm.core.files import atomic_open, atomic_write_json
from domainvlm.domains.surgical.phases import CHOLEC80_FPS, CHOLEC80_PHASES, CHOLEC80_TOOLS
from PIL import Image, ImageDraw

SIZES = {
    # name: (train, val, test videos, phase seconds low, high, frame side)
    "small": (4, 1, 2, 1.6, 2.4, 64),
    "demo": (32, 2, 6, 4.0, 6.5, 64),
}
FPS = int(CHOLEC80_FPS)
TOOL_COLOURS = {
    "Grasper": (205, 205, 215),
    "Bipolar": (250, 220, 30),
    "Hook": (40, 90, 255),
    "Scissors": (255, 130, 20),
    "Clipper": (220, 40, 220),
    "Irrigator": (30, 230, 230),
    "SpecimenBag": (245, 245, 245),
}
PHRASES = (
    (
        "in preparation phase I insert trocars to patient abdomen cavity",
        "I insert the trocars",
        "now the trocar goes into the abdomen cavity",
        "preparation of the patient abdomen",
        "we insert trocars into the cavity",
    ),
    (
        "in calot triangle dissection phase I use grasper to hold gallbladder",
        "I use hook to expose the hepatic triangle area",
        "expose the cystic duct and cystic artery",
        "the grasper holds the gallbladder and the hook works in calot triangle",
        "we expose the hepatic triangle with the hook",
    ),
    (
        "in clip and cut phase I use clipper to clip the cystic duct and artery",
        "now I clip the cystic duct",
        "clip the cystic artery",
        "then use scissor to cut them",
        "I cut the duct and artery with the scissor",
    ),
    (
        "in dissection phase I use the hook to dissect the connective tissue",
        "dissect the gallbladder from the liver",
        "the hook dissects the connective tissue between gallbladder and liver",
        "separate the gallbladder and liver with the hook",
    ),
    (
        "in packaging phase I put the gallbladder into the specimen bag",
        "put the gallbladder into the bag",
        "the specimen bag is open",
        "the gallbladder goes into the specimen bag",
    ),
    (
        "in clean and coagulation phase I use suction and irrigation",
        "clear the surgical field with irrigation",
        "coagulate bleeding vessels",
        "suction and irrigation to clear the field",
        "I coagulate the bleeding vessel with bipolar",
    ),
    (
        "in retraction phase I grasp the specimen bag",
        "remove it from trocar",
        "grasp the specimen bag and remove it",
        "retraction of the specimen bag through the trocar",
    ),
)
OPENERS = ("", "", "now ", "okay so ", "here ", "at this point ", "so ")
FILLERS = ("okay", "so let us continue", "good", "you can see that here")
KEYSTEPS = (
    "insert trocars into the abdomen cavity",
    "calot triangle dissection exposing the cystic duct and cystic artery",
    "clip and cut the cystic duct and artery",
    "dissect the gallbladder from the liver bed",
    "put the gallbladder into the specimen bag",
    "clean the field with suction and irrigation and coagulate bleeding",
    "retract the specimen bag through the trocar",
)
PHASE_NAMES = (
    "preparation",
    "calot triangle dissection",
    "clip and cut",
    "dissection",
    "packaging",
    "clean and coagulation",
    "retraction",
)
"""The phases as the published prompts name them."""
CT50_INSTRUMENTS = ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
CT50_VERBS = (
    "grasp", "retract", "dissect", "coagulate", "clip", "cut", "aspirate", "irrigate", "pack",
    "null_verb",
)  # fmt: skip
CT50_TARGETS = (
    "gallbladder", "cystic_plate", "cystic_duct", "cystic_artery", "cystic_pedicle",
    "blood_vessel", "fluid", "abdominal_wall_cavity", "liver", "adhesion", "omentum",
    "peritoneum", "gut", "specimen_bag", "null_target",
)  # fmt: skip
CT50_TRIPLETS = (
    ("grasper", "retract", "gallbladder"),
    ("hook", "dissect", "cystic_duct"),
    ("hook", "dissect", "cystic_artery"),
    ("clipper", "clip", "cystic_duct"),
    ("scissors", "cut", "cystic_artery"),
    ("hook", "dissect", "gallbladder"),
    ("grasper", "pack", "gallbladder"),
    ("irrigator", "aspirate", "fluid"),
    ("bipolar", "coagulate", "blood_vessel"),
    ("grasper", "grasp", "specimen_bag"),
)
"""The sample's triplets (CholecT50 has 100; the format is the same)."""


def phase_tools(phase: int, progress: float) -> tuple[str, ...]:
    """Which tools are in view at ``progress`` (0-1) through ``phase``: drawing and labels agree."""
    return (
        (("Grasper",) if progress > 0.7 else ()),
        ("Grasper", "Hook"),
        ("Grasper", "Clipper") if progress < 0.55 else ("Grasper", "Scissors"),
        ("Grasper", "Hook"),
        ("Grasper", "SpecimenBag"),
        ("Irrigator",) if progress < 0.5 else ("Bipolar", "Irrigator"),
        ("Grasper", "SpecimenBag"),
    )[phase]


class Procedure:
    """One synthetic video: phase boundaries and the per-video look of the scene."""

    def __init__(self, rng: np.random.Generator, seconds: tuple[float, float], side: int) -> None:
        self.side = side
        lengths = rng.uniform(*seconds, size=len(CHOLEC80_PHASES))
        self.bounds = np.concatenate([[0.0], np.cumsum(lengths)])
        self.frames = int(round(self.bounds[-1] * FPS))
        self.duration = self.frames / FPS
        self.liver = np.array([120, 30, 30]) + rng.integers(-20, 21, 3)
        texture = rng.normal(0, 14, (side * 2, side * 2, 1)) + rng.normal(
            0, 6, (side * 2, side * 2, 3)
        )
        self.texture = texture.astype(np.float32)
        self.centre = np.array([side * 0.5, side * 0.42]) + rng.uniform(-4, 4, 2)
        self.phase_seed = rng.integers(0, 2**31, len(CHOLEC80_PHASES))

    def phase_at(self, time: float) -> tuple[int, float]:
        phase = int(np.searchsorted(self.bounds, time, side="right") - 1)
        phase = min(max(phase, 0), len(CHOLEC80_PHASES) - 1)
        start, end = self.bounds[phase], self.bounds[phase + 1]
        return phase, float(np.clip((time - start) / (end - start), 0, 1))

    def render(self, frame: int) -> np.ndarray:
        time = frame / FPS
        phase, progress = self.phase_at(time)
        s = self.side
        wobble = 3 if phase == 0 else 1
        dx = int(round(wobble * math.sin(time * 1.7))) + s // 2
        dy = int(round(wobble * math.cos(time * 1.3))) + s // 2
        base = np.clip(self.liver + self.texture[dy : dy + s, dx : dx + s], 0, 255)
        if phase == 0:
            base = base * (0.55 + 0.3 * progress)  # the camera enters: dim, moving
        if phase == 5:
            base = base * 0.8 + np.array([0, 30, 70]) * 0.2  # irrigation water
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        self._anatomy(draw, phase, progress)
        for tool in phase_tools(phase, progress):
            self._tool(draw, tool, phase, progress, time)
        if phase == 0:
            for corner in ((4, 4), (s - 12, 6), (6, s - 12)):
                radius = 3 + 3 * progress
                draw.ellipse(
                    [corner[0], corner[1], corner[0] + 2 * radius, corner[1] + 2 * radius],
                    fill=(150, 150, 160),
                )
        return np.asarray(image)

    def _anatomy(self, draw: ImageDraw.ImageDraw, phase: int, progress: float) -> None:
        cx, cy = self.centre
        gallbladder = (70, 150, 60)
        if phase <= 3:
            shift = 6 * progress if phase == 3 else 0
            draw.ellipse([cx - 14, cy - 9 - shift, cx + 14, cy + 9 - shift], fill=gallbladder)
        duct_y = cy + 14
        if phase in (1, 2):
            draw.line([cx - 8, cy + 6, cx - 4, duct_y + 10], fill=(235, 215, 80), width=2)
            draw.line([cx + 6, cy + 6, cx + 3, duct_y + 10], fill=(240, 240, 170), width=1)
        if phase == 2:
            clips = int(1 + 3 * progress)
            for k in range(clips):
                y = cy + 9 + 3 * k
                draw.rectangle([cx - 9, y, cx - 4, y + 1], fill=(255, 255, 255))
        if phase in (4, 6):
            offset = 0 if phase == 4 else 18 * progress
            bag = [cx - 12 + offset, cy - 2 - offset, cx + 14 + offset, cy + 18 - offset]
            draw.rounded_rectangle(bag, radius=5, fill=(235, 235, 235))
            if phase == 4:
                r = 9 * (1 - progress) + 2
                draw.ellipse(
                    [
                        cx - r,
                        cy - 10 + 12 * progress - r / 2,
                        cx + r,
                        cy - 10 + 12 * progress + r / 2,
                    ],
                    fill=gallbladder,
                )
        if phase == 5:
            for k in range(3):
                r = 3 * (1 - progress) + 1
                x, y = cx - 10 + 10 * k, cy + 8 + 4 * (k % 2)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(200, 0, 0))
        if phase == 3:
            for k in range(2):
                x = cx - 10 + 20 * ((progress * 3 + k * 0.5) % 1)
                draw.ellipse([x - 4, cy + 2, x + 4, cy + 8], fill=(190, 190, 190))

    def _tool(
        self, draw: ImageDraw.ImageDraw, tool: str, phase: int, progress: float, time: float
    ) -> None:
        s, (cx, cy) = self.side, self.centre
        colour = TOOL_COLOURS[tool]
        swing = math.sin(time * 4.0)
        if tool == "Grasper":
            tip = (cx + 10 + 2 * swing, cy - 6)
            if phase == 6:
                tip = (cx + 12 + 18 * progress, cy - 4 - 18 * progress)
            draw.line([s, 0, *tip], fill=colour, width=3)
            draw.line([tip[0], tip[1], tip[0] - 4, tip[1] - 3], fill=colour, width=2)
            draw.line([tip[0], tip[1], tip[0] - 4, tip[1] + 3], fill=colour, width=2)
        elif tool == "Hook":
            along = progress * 20 - 10 if phase == 3 else 3 * swing
            tip = (cx + along, cy + (9 if phase == 3 else 12))
            draw.line([0, s, *tip], fill=colour, width=3)
            draw.line([tip[0], tip[1], tip[0] + 3, tip[1] - 4], fill=colour, width=2)
        elif tool == "Clipper":
            tip = (cx - 6, cy + 10 + 2 * swing)
            draw.line([0, s * 0.8, *tip], fill=colour, width=4)
            draw.rectangle([tip[0] - 2, tip[1] - 2, tip[0] + 2, tip[1] + 2], outline=colour)
        elif tool == "Scissors":
            tip = (cx - 5, cy + 12)
            opening = 3 + 2 * abs(swing)
            draw.line([0, s, tip[0], tip[1] - opening], fill=colour, width=2)
            draw.line([0, s - 8, tip[0], tip[1] + opening], fill=colour, width=2)
        elif tool == "Irrigator":
            tip = (cx + 4 * swing, cy + 6)
            draw.line([s * 0.1, s, *tip], fill=colour, width=5)
        elif tool == "Bipolar":
            tip = (cx + 8, cy + 10 + 2 * swing)
            draw.line([s, s, *tip], fill=colour, width=3)
            draw.line([tip[0], tip[1], tip[0] - 3, tip[1] - 2], fill=colour, width=2)
        # the specimen bag is part of the scene (``_anatomy``)


def _sentences(
    rng: np.random.Generator, proc: Procedure, piece: tuple[float, float], variant: int
) -> list[tuple[float, float, str]]:
    """One narration: sentences of ``piece`` seconds inside each phase, phrases drawn per phase."""
    rows = []
    for phase in range(len(CHOLEC80_PHASES)):
        start, end = float(proc.bounds[phase]), float(proc.bounds[phase + 1])
        t = start + rng.uniform(0, 0.4)
        while t < end - 0.5:
            length = min(rng.uniform(*piece), end - t)
            if rng.random() < 0.08:
                text = str(rng.choice(FILLERS))
            else:
                phrases = PHRASES[phase]
                count = 1 + int(rng.random() < 0.3)
                picked = rng.choice(len(phrases), size=count, replace=False)
                text = str(rng.choice(OPENERS)) + " and ".join(phrases[i] for i in picked)
                if variant == 1:
                    text = text.replace("I use", "I'm using").replace("we ", "I ")
            rows.append((round(t, 2), round(t + length, 2), text))
            t += length + rng.uniform(0.0, 0.3)
    return rows


def _abstract(proc: Procedure) -> str:
    """The video's abstract names its longest and shortest phases (what sets one video apart from
    another: every video runs the same steps), so a video-level contrast has something to see."""
    lengths = np.diff(proc.bounds)
    longest, shortest = PHASE_NAMES[int(lengths.argmax())], PHASE_NAMES[int(lengths.argmin())]
    return (
        f"laparoscopic cholecystectomy with a long {longest} phase and a short {shortest} phase: "
        + ", then ".join(KEYSTEPS)
    )


def _csv_text(header: list[str], rows: list) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_video(path: Path, frames: list[np.ndarray] | np.ndarray, fps: int = FPS) -> None:
    """H.264 mp4 with a keyframe every second, so seeking decodes at most one second."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "g": str(fps), "preset": "veryfast"}
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode())
    tmp.replace(path)


def _triplets(tools: tuple[str, ...], phase: int) -> list[list[int]]:
    """CholecT50 instances of one frame (15 values each, boxes −1: the sample has none)."""
    rows = []
    for ivt, (instrument, verb, target) in enumerate(CT50_TRIPLETS):
        if instrument.capitalize() in tools or (instrument == "scissors" and "Scissors" in tools):
            if instrument == "hook" and (phase == 3) != (target == "gallbladder"):
                continue
            if instrument == "grasper" and (
                (verb == "pack") != (phase == 4) or (verb == "grasp") != (phase == 6)
            ):
                continue
            i, v, t = (
                CT50_INSTRUMENTS.index(instrument),
                CT50_VERBS.index(verb),
                CT50_TARGETS.index(target),
            )
            rows.append([ivt, i, 1, -1, -1, -1, -1, v, t, 1, -1, -1, -1, -1, phase])
    return rows


def write_sample(out_dir: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Write the sample (``small``: seconds, for tests; ``demo``: enough to show learning)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    out = Path(out_dir)
    n_train, n_val, n_test, low, high, side = SIZES[size]
    rng = np.random.default_rng(seed)
    ids = [f"video{n:02d}" for n in range(1, n_train + n_val + n_test + 1)]
    splits = {
        "train": ids[:n_train],
        "val": ids[n_train : n_train + n_val],
        "test": ids[n_train + n_val :],
    }
    for video_id in ids:
        proc = Procedure(rng, (low, high), side)
        frames = [proc.render(i) for i in range(proc.frames)]
        write_video(out / "videos" / f"{video_id}.mp4", frames)
        phases = [CHOLEC80_PHASES[proc.phase_at(i / FPS)[0]] for i in range(proc.frames)]
        _write_text(
            out / "phase_annotations" / f"{video_id}-phase.txt",
            "Frame\tPhase\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(phases)),
        )
        tool_rows = ["\t".join(("Frame", *CHOLEC80_TOOLS))]
        for i in range(0, proc.frames, FPS):
            present = phase_tools(*proc.phase_at(i / FPS))
            tool_rows.append(
                "\t".join([str(i), *("1" if t in present else "0" for t in CHOLEC80_TOOLS)])
            )
        _write_text(out / "tool_annotations" / f"{video_id}-tool.txt", "\n".join(tool_rows) + "\n")
        for variant, (folder, piece) in enumerate(
            (("aws_narration_texts", (1.6, 2.6)), ("whisper_narration_texts", (1.0, 3.2)))
        ):
            rows = _sentences(rng, proc, piece, variant)
            _write_text(out / folder / f"{video_id}.csv", _csv_text(["start", "end", "text"], rows))
        keysteps = [
            [round(proc.bounds[p], 2), round(proc.bounds[p + 1], 2), p, KEYSTEPS[p]]
            for p in range(7)
        ]
        _write_text(
            out / "keystep_texts" / f"{video_id}.csv",
            _csv_text(["start", "end", "step", "text"], keysteps),
        )
        _write_text(
            out / "abstract_texts" / f"{video_id}.csv", _csv_text(["text"], [[_abstract(proc)]])
        )
        if video_id in splits["test"]:
            _write_cholect50(out / "cholect50", video_id, proc, frames)
    for name, members in (
        ("train_narration", splits["train"]),
        ("train_keystep", splits["train"]),
        ("train_abstract", splits["train"]),
        ("val", splits["val"]),
        ("test", splits["test"]),
    ):
        _write_text(
            out / "splits" / f"{name}.csv",
            _csv_text(["video_path"], [[f"videos/{v}.mp4"] for v in members]),
        )
    _write_text(
        out / "README.txt",
        "SYNTHETIC surgical video sample written by `domainvlm sample-data surgical` "
        f"(size={size}, seed={seed}). Not real surgery: rendered shapes with phase-specific "
        "instruments, in the SVL (SurgVLP), Cholec80 and CholecT50 layouts.\n",
    )
    return out


def _write_cholect50(root: Path, video_id: str, proc: Procedure, frames: list[np.ndarray]) -> None:
    """1-fps frames ``videos/VIDnn/000000.png`` and ``labels/VIDnn.json``."""
    name = "VID" + video_id.removeprefix("video")
    annotations = {}
    for second, index in enumerate(range(0, proc.frames, FPS)):
        phase, progress = proc.phase_at(index / FPS)
        annotations[str(second)] = _triplets(phase_tools(phase, progress), phase)
        folder = root / "videos" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frames[index]).save(folder / f"{second:06d}.png")
    categories = {
        "triplet": {str(i): f"{a},{b},{c}" for i, (a, b, c) in enumerate(CT50_TRIPLETS)},
        "instrument": {str(i): n for i, n in enumerate(CT50_INSTRUMENTS)},
        "verb": {str(i): n for i, n in enumerate(CT50_VERBS)},
        "target": {str(i): n for i, n in enumerate(CT50_TARGETS)},
        "phase": {str(i): n for i, n in enumerate(CHOLEC80_PHASES)},
    }
    labels = {
        "video": int(video_id.removeprefix("video")),
        "fps": 1,
        "num_frames": len(annotations),
        "categories": categories,
        "annotations": annotations,
    }
    atomic_write_json(root / "labels" / f"{name}.json", labels)
