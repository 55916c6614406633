"""A small sample and a 2-step pretraining checkpoint, made once and shared by the medical tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from domainvlm.core.cli import main
from domainvlm.domains.medical import PLUGIN

CONFIGS = Path(__file__).parents[3] / "configs" / "medical"


def fit(config_name: str, root: Path, tmp_path: Path, model_args: dict) -> None:
    """A 2-step fit of a shipped config through the CLI, as a user runs it."""
    config = yaml.safe_load((CONFIGS / config_name).read_text())
    config["trainer"].update(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False
    )
    config["trainer"].pop("max_time", None)
    config["model"]["init_args"].update(model_args)
    config["data"]["init_args"].update(root=str(root), batch_size=8)
    path = tmp_path / config_name
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return PLUGIN.write_sample(tmp_path_factory.mktemp("medical") / "sample", size="small")


@pytest.fixture(scope="session")
def pretrained(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("pretrain")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        fit("tiny_pretrain.yaml", sample_root, workdir, {})
    return workdir / "runs/medical/tiny_pretrain/checkpoints/last.ckpt"
