from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from domainvlm.core.checkpoint import load_system
from domainvlm.core.cli import main


def toy_config(tmp_path: Path, root: Path, **trainer) -> Path:
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 6,
            "accelerator": "cpu",
            "devices": 1,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "run"),
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(tmp_path / "ckpt"), "save_last": True},
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


def test_missing_data_root_says_how_to_write_samples(toy_plugin, tmp_path, capsys):
    config = toy_config(tmp_path, tmp_path / "nowhere")
    assert main(["fit", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "domainvlm sample-data toy" in err


def test_unknown_domain_is_one_clear_line(capsys):
    assert main(["sample-data", "atlantis", "--out", "x"]) == 1
    err = capsys.readouterr().err
    assert "unknown domain 'atlantis'" in err and "domainvlm domains" in err
