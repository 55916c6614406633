from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from domainvlm.core.errors import DomainVLMError
from domainvlm.domains.surgical.cholect50 import read_cholect50
from domainvlm.domains.surgical.phases import (
    AUTOLAPARO_PHASES,
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    read_autolaparo_phases,
    read_frame_labels,
    read_phase_file,
    read_tool_file,
)
from domainvlm.domains.surgical.transcripts import (
    read_abstract,
    read_keysteps,
    read_split,
    read_transcript,
)
from domainvlm.domains.surgical.video import BadFileWarning, SurgicalDataError, probe, read_all

SRT = """1
00:00:01,500 --> 00:00:04,000
I use the clipper to clip
the cystic duct

2
00:00:04,200 --> 00:01:02,250
<i>then</i> cut them
"""
VTT = """WEBVTT

00:01.000 --> 00:03.500
In preparation phase I insert trocars

intro-2
00:00:03.600 --> 00:00:05.000 align:start
okay
"""


def test_srt_and_webvtt_cues_become_sentences(tmp_path: Path):
    (tmp_path / "a.srt").write_text(SRT)
    (tmp_path / "a.vtt").write_text(VTT)
    srt = read_transcript(tmp_path / "a.srt")
    assert [(s.start, s.end, s.text) for s in srt] == [
        (1.5, 4.0, "I use the clipper to clip the cystic duct"),
        (4.2, 62.25, "then cut them"),
    ]
    vtt = read_transcript(tmp_path / "a.vtt")
    assert [(s.start, s.end, s.text) for s in vtt] == [
        (1.0, 3.5, "In preparation phase I insert trocars"),
        (3.6, 5.0, "okay"),
    ]


def test_svl_csv_files_of_the_sample(sample_root: Path):
    sentences = read_transcript(sample_root / "aws_narration_texts" / "video01.csv")
    assert len(sentences) > 5 and all(s.end >= s.start for s in sentences)
    assert [s.start for s in sentences] == sorted(s.start for s in sentences)
    keysteps = read_keysteps(sample_root / "keystep_texts" / "video01.csv")
    assert [k.step for k in keysteps] == list(range(7))
    assert read_abstract(sample_root / "abstract_texts" / "video01.csv").startswith("laparoscopic")
    assert read_split(sample_root / "splits" / "test.csv") == ["video06", "video07"]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [("2.0,1.0,backwards", "end < start"), ("1.0,99.0,too late", "past the video's end")],
)
def test_bad_transcript_times_name_the_file(tmp_path: Path, rows: str, problem: str):
    path = tmp_path / "v.csv"
    path.write_text(f"start,end,text\n0,1,fine\n{rows}\n")
    with pytest.raises(SurgicalDataError, match=problem) as error:
        read_transcript(path, duration=10.0)
    assert isinstance(error.value, DomainVLMError) and str(path) in str(error.value)


def test_skip_option_counts_bad_files_in_one_warning(tmp_path: Path):
    good = tmp_path / "good.csv"
    good.write_text("start,end,text\n0,1,fine\n")
    bad = [tmp_path / "bad1.csv", tmp_path / "bad2.vtt"]
    bad[0].write_text("start,end,text\n3,1,backwards\n")
    bad[1].write_text("not a vtt\n")
    with pytest.warns(BadFileWarning, match="skipped 2 bad transcripts") as caught:
        kept = read_all([good, *bad], read_transcript, True, "transcripts")
    assert len(kept) == 1 and len(caught) == 1 and "bad1.csv" in str(caught[0].message)
    with pytest.raises(SurgicalDataError, match="bad1.csv"):
        read_all([good, *bad], read_transcript, False, "transcripts")


def test_cholec80_phase_and_tool_files_match_their_video(sample_root: Path):
    info = probe(sample_root / "videos" / "video01.mp4")
    track = read_phase_file(
        sample_root / "phase_annotations" / "video01-phase.txt",
        video_frames=info.frames,
        video_fps=info.fps,
    )
    assert len(track.labels) == info.frames
    assert [phase for _, _, phase in track.segments()] == list(range(7))  # in order, once each
    tools = read_tool_file(sample_root / "tool_annotations" / "video01-tool.txt")
    assert tools.tools == CHOLEC80_TOOLS and np.allclose(np.diff(tools.times), 1.0)
    calot = [i for i, t in enumerate(tools.times) if track.at(t) == 1]
    hook = CHOLEC80_TOOLS.index("Hook")
    assert tools.presence[calot, hook].all()  # the hook works through calot triangle dissection


def test_phase_file_errors(tmp_path: Path):
    path = tmp_path / "video01-phase.txt"
    path.write_text("Frame\tPhase\n0\tPreparation\n1\tSuturing\n")
    with pytest.raises(SurgicalDataError, match="unknown phase 'Suturing'"):
        read_phase_file(path)
    path.write_text("Frame\tPhase\n" + "".join(f"{i}\tPreparation\n" for i in range(100)))
    with pytest.raises(SurgicalDataError, match="annotates 100 frames .* video has 200 frames"):
        read_phase_file(path, video_frames=200, video_fps=25.0)
    assert read_phase_file(path, video_frames=110, video_fps=25.0).duration == 4.0


def test_autolaparo_numbers_and_frame_folder_csv(tmp_path: Path):
    path = tmp_path / "label_15.txt"
    path.write_text("Frame\tPhase\n0\t1\n1\t1\n2\t4\n3\t7\n")
    track = read_autolaparo_phases(path)
    assert track.labels.tolist() == [0, 0, 3, 6] and track.fps == 1.0
    assert AUTOLAPARO_PHASES[track.at(2.2)] == "Transecting the Vagina"
    csv = tmp_path / "test.csv"
    csv.write_text("path,label\nvideo49/00001.png,2\nvideo49/00002.png,7\n")
    with pytest.raises(SurgicalDataError, match="line 3: label '7'"):
        read_frame_labels(csv)
    csv.write_text("path,label\nvideo49/00001.png,2\n")
    assert read_frame_labels(csv) == [(tmp_path / "video49/00001.png", 2)]


def test_cholect50_labels_of_the_sample(sample_root: Path):
    labels = read_cholect50(sample_root / "cholect50" / "labels" / "VID06.json")
    frames = sorted((sample_root / "cholect50" / "videos" / "VID06").glob("*.png"))
    assert len(labels.frames) == len(frames) and labels.frames[0] == 0
    assert labels.presence["instrument"].shape == (len(frames), 6)
    assert labels.presence["verb"].shape[1] == 10 and labels.presence["target"].shape[1] == 15
    clipping = labels.phases == CHOLEC80_PHASES.index("ClippingCutting")
    clip_verb = labels.names["verb"].index("clip")
    assert labels.presence["verb"][clipping, clip_verb].any()
    assert not labels.presence["verb"][~clipping, clip_verb].any()


def test_cholect50_bad_instance_names_the_file(tmp_path: Path):
    path = tmp_path / "VID01.json"
    categories = {c: {"0": "x"} for c in ("triplet", "instrument", "verb", "target")}
    path.write_text(json.dumps({"categories": categories, "annotations": {"0": [[0, 0, 1]]}}))
    with pytest.raises(SurgicalDataError, match=r"VID01.json: frame 0 instance 0: expected a list"):
        read_cholect50(path)
