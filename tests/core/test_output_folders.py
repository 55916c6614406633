"""Commands that write a folder say which folder cannot be written, in one line (not a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from domainvlm.core.errors import FileError
from domainvlm.core.files import check_output_folder

from tests.helpers import run_cli


def _blocked(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path / "a_file" / "out"


def test_check_output_folder_names_the_folder(tmp_path: Path) -> None:
    assert check_output_folder(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"
    assert not (tmp_path / "new").exists()
    with pytest.raises(FileError, match="a_file/out: cannot create this output folder"):
        check_output_folder(_blocked(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        ("sample-data", "medical", "--size", "small", "--out"),
        ("kb", "build", "--domain", "remote_sensing", "--checkpoint", "unused.ckpt", "--out"),
    ],
)
def test_commands_refuse_an_unwritable_output_folder_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: tuple[str, ...]
) -> None:
    out = _blocked(tmp_path)
    code, _, err = run_cli(capsys, *argv, out)
    assert code != 0
    assert "cannot create this output folder" in err and "a_file/out" in err
    assert "Traceback" not in err
