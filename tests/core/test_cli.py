from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from domainvlm.core.checkpoint import load_system
from domainvlm.core.cli import main
from lightning.pytorch.strategies import SingleDeviceStrategy

REPO = Path(__file__).resolve().parents[2]


def toy_config(tmp_path: Path, root: Path, pinned: bool = True, **trainer) -> Path:
    """A toy fit config; ``pinned`` puts checkpoints in tmp_path/ckpt and turns the logger off,
    otherwise both follow the run directory as in the shipped configs."""
    checkpoint = {"save_last": True, "save_top_k": 0, "enable_version_counter": False}
    if pinned:
        checkpoint = {"dirpath": str(tmp_path / "ckpt"), "save_last": True}
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 6,
            "accelerator": "cpu",
            "devices": 1,
            **({"logger": False} if pinned else {}),
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": checkpoint,
                }
            ],
            **trainer,
        },
        "model": {
            "class_path": "tests.plugins.toy_domain.ToySystem",
            "init_args": {"dim": 8, "lr": 0.01, "warmup": 2},
        },
        "data": {
            "class_path": "tests.plugins.toy_domain.ToyDataModule",
            "init_args": {"root": str(root), "batch_size": 6},
        },
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "domains", "sample-data"):
        assert command in out


def test_fit_help_explains_config_and_overrides(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out and "--ckpt_path" in out and "--print_config" in out


def test_plugin_from_test_tree_is_listed_and_writes_sample(toy_plugin, tmp_path, capsys):
    assert main(["domains", "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert "toy" in names
    assert main(["sample-data", "toy", "--out", str(tmp_path / "data"), "--size", "small"]) == 0
    assert (tmp_path / "data" / "train.json").is_file()


def test_fit_extra_domain_then_resume_from_last_checkpoint(toy_plugin, tmp_path):
    root = toy_plugin.write_sample(tmp_path / "data")
    config = toy_config(tmp_path, root)
    main(["fit", "--config", str(config)])
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == 6

    main(["fit", "--config", str(config), "--trainer.max_steps", "10", "--ckpt_path", str(last)])
    assert torch.load(last, weights_only=True)["global_step"] == 10

    system = load_system(last)
    assert type(system).__name__ == "ToySystem"
    assert system.preprocessing["image_size"] == 8
    batch = torch.ones(2, 3, 8, 8)
    assert system.encoder().encode_images(batch).shape == (2, 8)


def test_training_lowers_the_loss(toy_plugin, tmp_path):
    root = toy_plugin.write_sample(tmp_path / "data")
    config = toy_config(tmp_path, root, max_steps=40)
    main(["fit", "--config", str(config)])
    system = load_system(tmp_path / "ckpt" / "last.ckpt")
    images = torch.stack(
        [torch.full((3, 8, 8), 0.0).index_fill_(0, torch.tensor(i), 1.0) for i in range(3)]
    )
    texts = ["a red square", "a green square", "a blue square"]
    encoder = system.encoder()
    similarity = encoder.encode_images(images) @ encoder.encode_texts(texts).T
    assert similarity.argmax(dim=1).tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        (["--model.init_args.lrr", "0.1"], "model.init_args.lrr"),
        (["--data.init_args.rooot", "x"], "data.init_args.rooot"),
        (["--trainer.max_stepz", "3"], "trainer.max_stepz"),
    ],
)
def test_config_typo_is_one_paragraph_naming_the_key(toy_plugin, tmp_path, capsys, override, key):
    config = toy_config(tmp_path, tmp_path)
    assert main(["fit", "--config", str(config), *override]) == 1
    err = capsys.readouterr().err.strip()
    assert key in err and "--print_config" in err
    assert len(err.splitlines()) == 1


def test_lightning_misconfiguration_is_one_line(toy_plugin, tmp_path, capsys):
    config = toy_config(tmp_path, tmp_path)
    assert main(["fit", "--config", str(config), "--trainer.enable_checkpointing", "false"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("domainvlm: error: invalid trainer setting:") and "ModelCheckpoint" in err


def test_missing_data_root_says_how_to_write_samples(toy_plugin, tmp_path, capsys):
    config = toy_config(tmp_path, tmp_path / "nowhere")
    assert main(["fit", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "domainvlm sample-data toy" in err


def test_unknown_domain_is_one_clear_line(capsys):
    assert main(["sample-data", "atlantis", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert "unknown domain 'atlantis'" in err and "domainvlm domains" in err


# -- run directory ---------------------------------------------------------------------------
def test_every_output_follows_the_run_directory(toy_plugin, tmp_path):
    """Two runs of one config with different run directories keep their own checkpoints and logs."""
    root = toy_plugin.write_sample(tmp_path / "data")
    config = toy_config(tmp_path, root, pinned=False, log_every_n_steps=1)
    for run, steps in (("a", 2), ("b", 3)):
        run_dir = tmp_path / run
        args = ["--trainer.default_root_dir", str(run_dir), "--trainer.max_steps", str(steps)]
        assert main(["fit", "--config", str(config), *args]) == 0
    for run, steps in (("a", 2), ("b", 3)):
        files = {p.relative_to(tmp_path / run).as_posix() for p in (tmp_path / run).rglob("*.*")}
        assert files == {
            "checkpoints/last.ckpt",
            "logs/version_0/config.yaml",
            "logs/version_0/hparams.yaml",
            "logs/version_0/metrics.csv",
        }
        last = torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["global_step"] == steps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "data", "site", "toy.yaml"]


# -- resume never unpickles ------------------------------------------------------------------
class RunsCodeWhenUnpickled:
    """Unpickling this creates ``marker``: what a hostile checkpoint could do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(("command", "ckpt_path"), [("fit", "last"), ("test", "hostile.ckpt")])
def test_ckpt_path_is_loaded_weights_only(
    toy_plugin, tmp_path, monkeypatch, capsys, command, ckpt_path
):
    """`last` is found by Lightning itself and loaded by the strategy: both paths must refuse."""
    # torch 2.4/2.5 (allowed by pyproject.toml) default to weights_only=False; this env var makes
    # the installed torch behave the same way.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.chdir(tmp_path)
    root = toy_plugin.write_sample(tmp_path / "data")
    marker = tmp_path / "code_ran"
    hostile = tmp_path / ("ckpt/last.ckpt" if ckpt_path == "last" else ckpt_path)
    hostile.parent.mkdir(exist_ok=True)
    torch.save({"state_dict": {}, "payload": RunsCodeWhenUnpickled(marker)}, hostile)
    config = toy_config(tmp_path, root)
    assert main([command, "--config", str(config), "--ckpt_path", ckpt_path]) == 1
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert hostile.name in err and "refused: only weights_only=True checkpoints" in err
    assert len(err.splitlines()) == 1


class OwnLoaderStrategy(SingleDeviceStrategy):
    """Like FSDP or DeepSpeed: reads checkpoints without the checkpoint I/O plugin."""

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        raise AssertionError("a strategy with its own loader must not be asked to resume")


def test_resume_refuses_strategies_with_their_own_loader(toy_plugin, tmp_path, capsys):
    root = toy_plugin.write_sample(tmp_path / "data")
    strategy = {"class_path": f"{__name__}.OwnLoaderStrategy", "init_args": {"device": "cpu"}}
    config = toy_config(tmp_path, root, strategy=strategy, max_steps=1)
    assert main(["fit", "--config", str(config)]) == 0  # training itself is fine
    last = tmp_path / "ckpt" / "last.ckpt"
    assert main(["fit", "--config", str(config), "--ckpt_path", str(last)]) == 1
    err = capsys.readouterr().err
    assert "OwnLoaderStrategy" in err and "not weights-only" in err


def test_impossible_trainer_setting_is_one_line(toy_plugin, tmp_path, capsys):
    config = toy_config(tmp_path, tmp_path, strategy="no_such_strategy")
    assert main(["fit", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("domainvlm: error: invalid trainer setting:") and "no_such_strategy" in err
    )


def test_weights_only_cannot_be_switched_off(toy_plugin, tmp_path, capsys):
    config = toy_config(tmp_path, tmp_path)
    assert main(["fit", "--config", str(config), "--weights_only", "false"]) == 1
    assert "weights_only" in capsys.readouterr().err


# -- errors: the user's vs bugs --------------------------------------------------------------
def _failing_run(exc: Exception):
    def run(args) -> int:
        raise exc

    return run


@pytest.mark.parametrize("exc", [ValueError("a bug"), OSError("a bug"), KeyError("a bug")])
def test_a_bug_shows_its_traceback(monkeypatch, exc):
    import domainvlm.core.commands.domains as command

    monkeypatch.setattr(command, "run", _failing_run(exc))
    with pytest.raises(type(exc), match="a bug"):
        main(["domains"])


def test_project_errors_are_one_line(monkeypatch, capsys):
    import domainvlm.core.commands.domains as command
    from domainvlm.core.errors import DataRootError
    from domainvlm.retrieval_db import KnowledgeBaseError

    for exc in (DataRootError("data root 'x' is missing"), KnowledgeBaseError("kb 'y' is bad")):
        monkeypatch.setattr(command, "run", _failing_run(exc))
        assert main(["domains"]) == 1
        assert capsys.readouterr().err == f"domainvlm: error: {exc}\n"


def test_every_domain_error_is_a_domainvlm_error():
    """The CLI shows only DomainVLMError subclasses as user errors: the domains' must be ones."""
    import importlib
    import inspect
    import pkgutil

    import domainvlm.domains
    from domainvlm.core.errors import DomainVLMError

    modules = [
        info.name
        for info in pkgutil.walk_packages(domainvlm.domains.__path__, "domainvlm.domains.")
    ]
    errors = [
        obj
        for name in modules
        for _, obj in inspect.getmembers(importlib.import_module(name), inspect.isclass)
        if issubclass(obj, Exception)
        and not issubclass(obj, Warning)
        and obj.__module__.startswith("domainvlm.")
    ]
    assert errors
    assert [e.__qualname__ for e in errors if not issubclass(e, DomainVLMError)] == []


# -- arguments reach Lightning without faking sys.argv ---------------------------------------
def test_lightning_sees_the_process_own_argv(toy_plugin, tmp_path, monkeypatch):
    """Lightning's DDP launcher starts the other ranks by re-running sys.argv: it must stay real."""
    from domainvlm.core.lightning_cli import DomainVLMCLI

    seen = []
    record = lambda self: seen.append(list(sys.argv))  # noqa: E731
    monkeypatch.setattr(DomainVLMCLI, "before_fit", record, raising=False)
    root = toy_plugin.write_sample(tmp_path / "data")
    config = toy_config(tmp_path, root, max_steps=1)
    assert main(["fit", "--config", str(config)]) == 0
    assert seen == [sys.argv]


# -- configs shipped in the package ----------------------------------------------------------
def test_packaged_config_is_found_from_any_directory(tmp_path, monkeypatch, capsys):
    from domainvlm.core.lightning_cli import PACKAGED_CONFIGS, resolve_config_paths

    monkeypatch.chdir(tmp_path)
    tiny = str(PACKAGED_CONFIGS / "remote_sensing" / "tiny.yaml")
    assert resolve_config_paths(["fit", "--config", "remote_sensing/tiny.yaml"])[2] == tiny
    assert resolve_config_paths(["fit", "--config=configs/remote_sensing/tiny.yaml"]) == [
        "fit",
        f"--config={tiny}",
    ]
    # a local file of the same name wins; unknown names are left for the parser to report
    (tmp_path / "remote_sensing").mkdir()
    (tmp_path / "remote_sensing" / "tiny.yaml").write_text("seed_everything: 1\n")
    assert resolve_config_paths(["fit", "-c", "remote_sensing/tiny.yaml", "-c", "../x.yaml"]) == [
        "fit",
        "-c",
        "remote_sensing/tiny.yaml",
        "-c",
        "../x.yaml",
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "medical/tiny_vqa.yaml", "--print_config"])
    assert exit_info.value.code == 0
    assert "M3AEVQASystem" in capsys.readouterr().out


# -- multi-process training through the real command ------------------------------------------
def _ddp_run(toy_plugin, tmp_path: Path, launcher: list[str], ddp_args: list[str]) -> Path:
    """Two CPU processes fit one epoch of the toy config; returns the run directory."""
    script = Path(sys.executable).parent / "domainvlm"
    if not script.is_file():
        pytest.skip(f"the console script is not installed beside {sys.executable}")
    root = toy_plugin.write_sample(tmp_path / "data")
    config = toy_config(
        tmp_path, root, pinned=False, max_steps=-1, max_epochs=1, log_every_n_steps=1
    )
    run_dir = tmp_path / "run"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),  # the toy system lives in the test tree
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
    }
    command = [*launcher, str(script), "fit", "--config", str(config), *ddp_args]
    # Run from another directory: Lightning starts rank 1 by re-running sys.argv from here.
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def _assert_trained_on_two_ranks(run_dir: Path) -> None:
    # 24 training samples, batch 6: one process takes 4 steps an epoch, each of two ranks 2.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2
    with open(run_dir / "logs" / "version_0" / "metrics.csv") as handle:
        losses = [float(row["train/loss"]) for row in csv.DictReader(handle) if row["train/loss"]]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


@pytest.mark.slow
def test_ddp_fit_through_the_console_script(toy_plugin, tmp_path):
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    _assert_trained_on_two_ranks(_ddp_run(toy_plugin, tmp_path, [], ddp))


@pytest.mark.slow
def test_ddp_fit_under_torchrun(toy_plugin, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ddp = ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    launcher = [*torchrun, "--nproc_per_node", "2"]
    _assert_trained_on_two_ranks(_ddp_run(toy_plugin, tmp_path, launcher, ddp))
