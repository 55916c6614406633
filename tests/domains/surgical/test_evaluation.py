from __future__ import annotations

import json
from pathlib import Path

import pytest
from domainvlm.core.checkpoint import load_system
from domainvlm.core.metrics import grouped_metrics
from domainvlm.core.zeroshot import ZeroShotClassifier
from domainvlm.domains.surgical.evaluation_data import retrieval_data, zeroshot_data
from domainvlm.domains.surgical.knowledge import moment_records, moment_windows
from domainvlm.domains.surgical.phases import CHOLEC80_PHASES
from domainvlm.domains.surgical.templates import CHOLEC80_PROMPTS

from tests.helpers import run_cli


def test_zeroshot_data_is_every_second_of_the_test_videos_with_the_published_prompts(
    sample_root: Path,
):
    data = zeroshot_data(sample_root, "test")
    assert set(data.groups) == {"video06", "video07"} and data.classnames == list(CHOLEC80_PHASES)
    assert str(data.paths[3]).endswith("video06.mp4#t=3")
    prompt = data.templates[0]
    assert [prompt(name) for name in data.classnames] == list(CHOLEC80_PROMPTS.values())
    assert data.labels[0] == 0 and data.labels[-1] == 6 and "per video" in data.protocol


def test_eval_zeroshot_reports_per_video_means_and_names_the_protocol(
    pretrained: Path, sample_root: Path, capsys
):
    code, lines, _ = run_cli(
        capsys, "eval", "zeroshot", "--checkpoint", pretrained, "--data", sample_root
    )
    result = json.loads(lines[-1])
    assert code == 0 and result["num_groups"] == 2 and "SurgVLP protocol" in result["protocol"]
    # by hand through the encoder and the same prompts
    data = zeroshot_data(sample_root, "test")
    logits = ZeroShotClassifier(load_system(pretrained).encoder()).logits(
        data.paths, data.classnames, data.templates
    )
    expected = grouped_metrics(logits.argmax(dim=1), data.labels, data.groups)
    assert result["mean_group_accuracy"] == pytest.approx(expected["mean_group_accuracy"])
    assert result["mean_group_macro_f1"] == pytest.approx(expected["mean_group_macro_f1"])


def test_retrieval_pairs_each_anchor_sentence_with_its_clip(sample_root: Path):
    data = retrieval_data(sample_root, "test")
    assert len(data.paths) == len(data.captions) == len(data.image_index) > 10
    assert all("#t=" in path and "," in path.rpartition("#t=")[2] for path in data.paths)


def test_moment_windows_cover_the_video():
    assert moment_windows(3.0) == [(0.0, 3.0)]
    assert moment_windows(9.0) == [(0.0, 4.0), (2.0, 6.0), (4.0, 8.0), (5.0, 9.0)]


def test_moment_records_carry_video_times_and_majority_phase(sample_root: Path):
    records = moment_records(sample_root)
    first = records[0]
    assert first["image"] == "videos/video01.mp4#t=0.000,4.000" and first["video"] == "video01"
    assert first["phase"] in CHOLEC80_PHASES[:2]
    assert {r["video"] for r in records} == {f"video{n:02d}" for n in range(1, 8)}
    assert records[-1]["phase"] in CHOLEC80_PHASES[5:]  # the last 4 s: cleaning or retraction


def test_kb_build_and_moment_search(pretrained: Path, sample_root: Path, tmp_path: Path, capsys):
    kb = tmp_path / "kb"
    code, lines, _ = run_cli(
        capsys, "kb", "build", "--domain", "surgical", "--data", sample_root,
        "--checkpoint", pretrained, "--out", kb,
    )  # fmt: skip
    assert code == 0 and json.loads(lines[-1])["count"] == len(moment_records(sample_root))
    query = "clip the cystic duct"
    code, lines, _ = run_cli(capsys, "kb", "search", kb, "--text", query, "-k", "3")
    hits = [json.loads(line) for line in lines]
    assert code == 0 and len(hits) == 3
    assert {"video", "start", "end", "phase"} <= set(hits[0]["record"])
    # by hand: the clip embeddings against the query
    encoder = load_system(pretrained).encoder()
    records = moment_records(sample_root)
    clips = [str(sample_root / record["image"]) for record in records]
    from domainvlm.core.retrieval import embed_images

    scores = (embed_images(encoder, clips) @ encoder.encode_texts([query]).T)[:, 0]
    best = records[int(scores.argmax())]
    assert (hits[0]["record"]["video"], hits[0]["record"]["start"]) == (
        best["video"],
        best["start"],
    )


def test_moment_queries_are_narration_sentences(sample_root: Path):
    from domainvlm.domains.surgical.knowledge import moment_queries

    queries = moment_queries(sample_root, limit=10)
    assert len(queries) == 10 and all(q["text"] for q in queries)
    assert len(moment_queries(None)) == 7


def test_zeroshot_data_reads_frame_folders_and_autolaparo(sample_root: Path, tmp_path: Path):
    import shutil

    from domainvlm.domains.surgical.phases import AUTOLAPARO_PHASES
    from domainvlm.domains.surgical.templates import AUTOLAPARO_PROMPTS
    from domainvlm.domains.surgical.video import probe

    frames = tmp_path / "frames"
    shutil.copytree(sample_root / "cholect50" / "videos" / "VID06", frames / "video06")
    rows = [
        f"video06/{p.name},{i % 7}" for i, p in enumerate(sorted((frames / "video06").iterdir()))
    ]
    (frames / "test.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    data = zeroshot_data(frames, "test")
    assert set(data.groups) == {"video06"} and data.labels[:8] == [0, 1, 2, 3, 4, 5, 6, 0]
    assert all(Path(p).is_file() for p in data.paths)

    laparo = tmp_path / "autolaparo"
    (laparo / "videos").mkdir(parents=True)
    shutil.copy(sample_root / "videos" / "video06.mp4", laparo / "videos" / "15.mp4")
    seconds = int(probe(laparo / "videos" / "15.mp4").duration)
    (laparo / "labels").mkdir()
    labels = "".join(f"{s}\t{1 + s * 7 // seconds}\n" for s in range(seconds))
    (laparo / "labels" / "label_15.txt").write_text("Frame\tPhase\n" + labels)
    data = zeroshot_data(laparo, "test")
    assert data.classnames == list(AUTOLAPARO_PHASES) and set(data.groups) == {"15"}
    assert data.labels[0] == 0 and data.labels[-1] == 6
    assert [data.templates[0](n) for n in data.classnames] == list(AUTOLAPARO_PROMPTS.values())
