"""Publishing (issue 35): a finished run becomes a Hub folder (tools/publish.py, densebackbones/publish.py) that
loads back by ``local-dir:`` and, offline from a pre-populated Hugging Face cache, by ``hf-hub:``, through
densebackbones' and timm's ``create_model``, with the run's exact weights; segmentation and detection models too;
``--repo-id`` uploads with huggingface_hub's ``HfApi``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import densebackbones as db
from densebackbones.data.classification import DATASETS
from densebackbones.engine.checkpoint import export_weights
from densebackbones.hub import push_hub_folder
from densebackbones.publish import write_hub_folder

REPO = Path(__file__).resolve().parents[2]
REPO_ID = "densebackbones-tests/digits"


def _tool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=env, cwd=REPO)


def _hf_cache(folder: Path, home: Path, repo_id: str) -> None:
    """huggingface_hub's cache layout with ``folder``'s files as the repository's main revision."""
    revision = "0" * 40
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)


LOAD_OFFLINE = """
import sys

import timm
import torch
from safetensors.torch import load_file

import densebackbones as db

expected = load_file(sys.argv[1])
for model in (db.create_model("hf-hub:{repo}", pretrained=True), timm.create_model("hf-hub:{repo}", pretrained=True)):
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in expected.items()), type(model)
print("loaded offline", type(model).__name__, model.num_classes)
try:
    db.create_model("hf-hub:densebackbones-tests/absent", pretrained=True)
except OSError as err:
    print(err)
"""


@pytest.mark.integration
def test_a_finished_run_publishes_and_reloads_offline(tmp_path):
    work, out = tmp_path / "run", tmp_path / "hub"
    options = ["schedule.epochs=1", "model.growth_rate=4", "data.batch_size=128"]
    train = _tool("tools/train_cls.py", "configs/cls/densenet_bc_digits.py", "--work-dir", str(work),
                  "--cfg-options", *options)  # fmt: skip
    assert train.returncode == 0, train.stderr[-3000:]
    publish = _tool("tools/publish.py", str(work), str(out))
    assert publish.returncode == 0, publish.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "densenet_bc100_k12_cifar"
    assert config["model_args"]["growth_rate"] == 4 and config["model_args"]["in_chans"] == 1
    final = json.loads((work / "final.json").read_text())
    card = (out / "README.md").read_text()
    assert f"| top1 | {final['eval']['top1']:.4g} |" in card and "configs/cls/densenet_bc_digits.py" in card
    assert "growth_rate=4" in card  # the resolved config
    weights = load_file(work / "final.safetensors")
    model = db.create_model(f"local-dir:{out}", pretrained=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
    # the inputs the run trained on (digits: 8 px, one channel, its own normalisation), not the CIFAR defaults
    digits = DATASETS["digits"]
    expected = dict(input_size=(1, digits.image_size, digits.image_size), mean=digits.mean, std=digits.std)
    for published in (config["pretrained_cfg"], timm.data.resolve_data_config({}, model=model)):
        for key, value in expected.items():
            assert tuple(published[key]) == pytest.approx(value), key

    home = tmp_path / "hf"
    _hf_cache(out, home, REPO_ID)
    script = tmp_path / "load.py"
    script.write_text(textwrap.dedent(LOAD_OFFLINE.format(repo=REPO_ID)))
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    loaded = _tool(str(script), str(work / "final.safetensors"), env=env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.splitlines()[0] == "loaded offline DenseNet 10"
    assert "not in the cache and cannot be downloaded" in loaded.stdout.splitlines()[1]  # another repository


HEADS = {
    "fc_densenet56": dict(num_classes=3, growth_rate=4, layers_per_block=1, first_conv_chs=8),
    "pelee": dict(num_classes=3, backbone_kwargs=dict(growth_rate=8, block_config=[1, 1, 1, 1], stem_width=8)),
}


@pytest.mark.parametrize("name", list(HEADS))
def test_segmentation_and_detection_models_through_local_dir(name, tmp_path):
    model = db.create_model(name, **HEADS[name])
    model._model_args = HEADS[name]  # what the tasks record as they build a run's model (tasks/common.py)
    export_weights(model, tmp_path / "run" / "final.safetensors", {"eval": {"score": 0.5}})
    folder = write_hub_folder(tmp_path / "run", tmp_path / "hub")
    again = db.create_model(f"local-dir:{folder}", pretrained=True)
    assert type(again) is type(model)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key


def test_publishing_refuses_what_is_not_a_finished_run_or_would_be_overwritten(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no final.safetensors and final.json: the run has not finished"):
        write_hub_folder(tmp_path, tmp_path / "hub")
    model = db.create_model("fc_densenet56", **HEADS["fc_densenet56"])
    export_weights(model, tmp_path / "run" / "final.safetensors")
    with pytest.raises(ValueError, match="records no model_args"):
        write_hub_folder(tmp_path / "run", tmp_path / "hub")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    model._model_args = HEADS["fc_densenet56"]
    export_weights(model, tmp_path / "run" / "final.safetensors")
    with pytest.raises(FileExistsError, match="holds other files"):
        write_hub_folder(tmp_path / "run", tmp_path / "busy")
    with pytest.raises(FileNotFoundError, match="no config.json in"):
        db.create_model(f"local-dir:{tmp_path / 'busy'}", pretrained=True)


def test_push_creates_the_repository_and_uploads_the_folder(tmp_path):
    calls = []

    class Api:  # huggingface_hub.HfApi's two calls, recorded instead of sent
        def create_repo(self, repo_id, private, exist_ok):
            calls.append(("create_repo", repo_id, private, exist_ok))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload_folder", folder_path, repo_id))
            return "https://huggingface.co/org/name/commit/abc"

    assert push_hub_folder(tmp_path, "org/name", private=True, api=Api()).endswith("/commit/abc")
    assert calls == [("create_repo", "org/name", True, True), ("upload_folder", str(tmp_path), "org/name")]
