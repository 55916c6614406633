"""The CLI answers help and argument errors and lists the domains without importing torch (or a
domain's readers), lists every domain's classes, and keeps what is not the user's business off the
screen."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from tests.helpers import run_cli

PROBE = """
import sys, time
start = time.perf_counter()
from domainvlm.core.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("torch", "lightning", "faiss", "open_clip", "rasterio", "pydicom", "cv2")
heavy = sorted(m for m in heavy if m in sys.modules)
print("RESULT", time.perf_counter() - start, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["domains"],  # loads every installed plugin: their hooks are imported when called
        ["domains", "--json"],
        ["eval", "--help"],  # builds each domain's own eval tasks' options
        ["eval", "probe", "--help"],
        ["kb", "--help"],
        ["ask", "--help"],
        ["zeroshot", "--help"],
        ["serve", "--help"],
        ["sample-data", "--help"],
        ["kb", "search"],  # an argument error: the directory and query are missing
        ["kb", "build", "--batch-size", "x"],
    ],
)
def test_help_and_argument_errors_import_no_framework(argv: list[str]):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120
    )
    line = next(row for row in done.stderr.splitlines() if row.startswith("RESULT"))
    _, seconds, heavy = line.split(" ")
    assert heavy == "", f"{argv} imported {heavy} ({float(seconds):.2f} s)"


def test_domains_lists_each_domains_systems_and_datamodules(capsys):
    code, lines, _ = run_cli(capsys, "domains", "--json")
    assert code == 0
    records = {record["name"]: record for record in map(json.loads, lines)}
    assert "domainvlm.domains.medical.system.M3AEVQASystem" in records["medical"]["systems"]
    assert (
        "domainvlm.domains.remote_sensing.datamodule.RSCaptionDataModule"
        in (records["remote_sensing"]["datamodules"])
    )
    code, lines, _ = run_cli(capsys, "domains")
    text = "\n".join(lines)
    assert (
        "MedicalVQADataModule (domainvlm.domains.medical.datamodule.MedicalVQADataModule)" in text
    )
    assert "--data.help CLASS" in text


def test_data_help_takes_the_short_class_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli(capsys, "fit", "--data.help", "RSCaptionDataModule")
    assert exit_.value.code == 0
    assert "--data.val_fraction" in capsys.readouterr().out


def test_the_litlogger_advertisement_is_dropped(caplog: pytest.LogCaptureFixture):
    import domainvlm.core.lightning_cli  # noqa: F401  (installs the filter)
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: try installing [litlogger](https://pypi.org/project/litlogger/)")
        rank_zero_info("GPU available: False")
    assert "litlogger" not in caplog.text and "GPU available" in caplog.text
