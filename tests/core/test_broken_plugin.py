"""A third-party plugin whose entry point fails to load is left out with one warning: top-level
help and the other domains keep working, and asking for its domain names it and its exception."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from domainvlm.core.registry import (
    DomainCommand,
    PluginLoadError,
    broken_domains,
    get_domain,
    load_domains,
)

from tests.helpers import command_domain, install_entry_point, register_plugin, run_cli

WARNING = (
    "domainvlm: warning: domain plugin 'broken' is left out, its entry point "
    "'broken = broken_domain_module:PLUGIN' failed to load: RuntimeError: needs libfrobnicate 2"
)


def _echo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("word")


def _echo(args: argparse.Namespace) -> int:
    print(f"echo {args.word}")
    return 0


HEALTHY = command_domain("healthy", {"echo": DomainCommand("echo a word", _echo_arguments, _echo)})
NOT_A_PLUGIN = {"name": "dict"}


@pytest.fixture
def broken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A healthy test domain plus ``broken``, whose module raises at import."""
    site = tmp_path / "b" / "site"
    site.mkdir(parents=True)
    (site / "broken_domain_module.py").write_text(
        'raise RuntimeError("needs libfrobnicate\\n2")\n', encoding="utf-8"
    )
    register_plugin(tmp_path / "h", monkeypatch, "healthy", f"{__name__}:HEALTHY")
    install_entry_point(tmp_path / "b", monkeypatch, "broken", "broken_domain_module:PLUGIN")
    yield
    load_domains.cache_clear()


def test_top_level_help_lists_the_healthy_domains_and_warns_once(broken, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, "--help")
    captured = capsys.readouterr()
    assert exit_info.value.code == 0
    assert "healthy" in captured.out and "comics" in captured.out  # test and built-in domains
    assert "broken" not in captured.out
    assert captured.err.splitlines() == [WARNING]
    load_domains()  # cached: not reported again in this process
    assert capsys.readouterr().err == ""


def test_other_domains_commands_still_run(broken, capsys):
    code, out, err = run_cli(capsys, "healthy", "echo", "hi")
    assert (code, out, err.splitlines()) == (0, ["echo hi"], [WARNING])


def test_the_broken_domains_command_names_the_plugin_and_its_exception(broken, capsys):
    code, out, err = run_cli(capsys, "broken", "predict", "--pages", "x")
    assert code == 1 and out == []
    warning, error = err.splitlines()
    assert warning == WARNING
    assert error == (
        "domainvlm: error: domain plugin 'broken' (entry point 'broken = "
        "broken_domain_module:PLUGIN' of the package 'broken-plugin') failed to load: "
        "RuntimeError: needs libfrobnicate 2. Fix or uninstall that package "
        "(DOMAINVLM_DEBUG=1 shows the traceback)."
    )


def test_the_original_exception_stays_chained_for_debugging(broken, capsys, monkeypatch):
    monkeypatch.setenv("DOMAINVLM_DEBUG", "1")
    with pytest.raises(PluginLoadError) as error:
        run_cli(capsys, "broken", "predict")
    assert isinstance(error.value.__cause__, RuntimeError)
    with pytest.raises(PluginLoadError, match="RuntimeError: needs libfrobnicate 2"):
        get_domain("broken")  # core commands taking a domain name (sample-data, kb) say the same
    assert set(broken_domains()) == {"broken"} and "healthy" in load_domains()


def test_an_entry_point_naming_no_domain_plugin_is_left_out_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    install_entry_point(tmp_path, monkeypatch, "notaplugin", f"{__name__}:NOT_A_PLUGIN")
    try:
        assert "notaplugin" not in load_domains() and "comics" in load_domains()
        assert capsys.readouterr().err.splitlines() == [
            f"domainvlm: warning: domain plugin 'notaplugin' is left out, its entry point "
            f"'notaplugin = {__name__}:NOT_A_PLUGIN' failed to load: TypeError: it must point "
            "at a domainvlm.core.registry.DomainPlugin, got dict"
        ]
    finally:
        load_domains.cache_clear()


def test_eval_finding_the_domain_of_a_broken_plugins_checkpoint_names_the_plugin(broken) -> None:
    from domainvlm.core.commands.evaluate import resolve_domain

    # a checkpoint whose system class lives in the broken package: eval without --domain
    with pytest.raises(PluginLoadError, match="needs libfrobnicate 2") as raised:
        resolve_domain(None, "broken_domain_module")
    assert isinstance(raised.value.__cause__, RuntimeError)
