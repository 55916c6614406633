"""The thresholds file ``eval characters --write-thresholds`` writes and ``comics predict
--thresholds`` reads: a round trip, flag > file > default, and malformed files named."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.domains.comics.character_thresholds import (
    CharacterThresholds,
    ThresholdsFileError,
    read_thresholds,
    resolve_thresholds,
    write_thresholds,
)


@pytest.fixture
def written(tmp_path: Path) -> Path:
    checkpoint = tmp_path / "run" / "last.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    path = tmp_path / "run" / "character_thresholds.json"
    write_thresholds(
        path, (0.15, "chosen on the val books of D"), (0.65, "given"), checkpoint, tmp_path
    )
    return path


def test_written_thresholds_read_back_with_how_they_were_chosen(written: Path):
    record = read_thresholds(written)
    assert (record["cluster_threshold"], record["name_threshold"]) == (0.15, 0.65)
    assert record["data"] == str(written.parent.parent.resolve())
    names = sorted(p.name for p in written.parent.iterdir())
    assert names == sorted(["last.ckpt", written.name])  # no temporary file left beside it
    thresholds, tuned_for = resolve_thresholds(None, None, written)
    assert thresholds == CharacterThresholds(
        0.15, 0.65, f"{written}: chosen on the val books of D", f"{written}: given"
    )
    assert tuned_for == str((written.parent / "last.ckpt").resolve())


@pytest.mark.parametrize(
    ("cluster", "name", "file", "expected"),
    [
        (None, None, False, (0.5, 0.5, "default", "default")),
        (None, None, True, (0.15, 0.65, "file", "file")),
        (0.3, None, True, (0.3, 0.65, "--cluster-threshold", "file")),
        (None, 0.9, True, (0.15, 0.9, "file", "--name-threshold")),
        (0.3, 0.9, False, (0.3, 0.9, "--cluster-threshold", "--name-threshold")),
    ],
)
def test_a_flag_wins_over_the_file_which_wins_over_the_default(
    written: Path, cluster, name, file, expected
):
    thresholds, tuned_for = resolve_thresholds(cluster, name, written if file else None)
    origin = {"cluster": thresholds.cluster_from, "name": thresholds.name_from}
    origin = {
        key: "file" if value.startswith(str(written)) else value for key, value in origin.items()
    }
    assert (thresholds.cluster, thresholds.name, origin["cluster"], origin["name"]) == expected
    # the file's checkpoint matters only where one of its thresholds is used
    assert (tuned_for is not None) == (file and None in (cluster, name))


def test_both_flags_given_still_check_the_file(tmp_path: Path):
    with pytest.raises(ThresholdsFileError, match="no such thresholds file"):
        resolve_thresholds(0.3, 0.9, tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not a readable JSON thresholds file"),
        ("[0.15, 0.65]", "a thresholds file is a JSON object"),
        ('{"name_threshold": 0.65}', "'cluster_threshold' must be a finite number, got None"),
        ('{"cluster_threshold": "0.15", "name_threshold": 0.65}', "got '0.15'"),
        ('{"cluster_threshold": 0.15, "name_threshold": NaN}', "'name_threshold' must be a finite"),
        ('{"cluster_threshold": true, "name_threshold": 0.65}', "got True"),
    ],
)
def test_a_malformed_file_is_named_with_its_problem(tmp_path: Path, text: str, problem: str):
    path = tmp_path / "thresholds.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ThresholdsFileError) as error:
        resolve_thresholds(None, None, path)
    assert error.value.path == path and problem in str(error.value)
    assert str(error.value).startswith(f"{path}: ")


def test_the_description_names_each_origin():
    thresholds = CharacterThresholds(0.15, 0.65, "t.json: chosen on the val books", "default")
    assert thresholds.describe() == (
        "character clusters cut at cosine distance 0.15 (t.json: chosen on the val books), "
        "names at similarity >= 0.65 (default)"
    )
    assert "names" not in thresholds.describe(naming=False)
