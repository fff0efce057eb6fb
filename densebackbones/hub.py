"""The Hugging Face Hub, both ways: ``hf-hub:`` / ``local-dir:`` names, and pushing a run's Hub folder.

* ``densebackbones.publish.write_hub_folder`` turns a finished run's work dir into what the Hub serves, in timm's
  format (``timm.models.save_for_hf``: ``config.json`` with ``architecture``, ``model_args`` and ``pretrained_cfg``,
  and ``model.safetensors``), plus a model card; ``tools/publish.py`` is its command line and pushes the folder with
  :func:`push_hub_folder`.
* :func:`hub_model` is what ``create_model("hf-hub:ORG/NAME")`` and ``create_model("local-dir:PATH")`` read: the
  folder's ``config.json`` names the architecture and its arguments, and the weights load as any file does
  (``pretrained_cfg_overlay=dict(file=...)``: complete and shape-checked), for every registered model, segmentation
  and detection models included. ``hf-hub:`` goes through ``huggingface_hub``'s cache, so ``HF_HUB_OFFLINE=1`` works
  once the files are there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import huggingface_hub

__all__ = ["HUB_PREFIXES", "HubModel", "hub_model", "push_hub_folder"]

HUB_PREFIXES = ("hf-hub:", "local-dir:")
WEIGHTS_FILE = "model.safetensors"


def _hub_files(name: str) -> tuple[Path, Path]:
    """(config.json, model.safetensors) of an ``hf-hub:`` or ``local-dir:`` name, downloaded or from the cache."""
    prefix, source = name.split(":", 1)
    if prefix == "local-dir":
        folder = Path(source).expanduser()
        config, weights = folder / "config.json", folder / WEIGHTS_FILE
        for path in (config, weights):
            if not path.is_file():
                raise FileNotFoundError(
                    f"{name}: no {path.name} in {folder}; a Hub folder holds config.json and {WEIGHTS_FILE} "
                    f"(tools/publish.py or timm's save_for_hf writes them)"
                )
        return config, weights
    repo_id, _, revision = source.partition("@")
    try:
        config = huggingface_hub.hf_hub_download(repo_id, "config.json", revision=revision or None)
        weights = huggingface_hub.hf_hub_download(repo_id, WEIGHTS_FILE, revision=revision or None)
    except huggingface_hub.errors.LocalEntryNotFoundError as err:
        raise OSError(
            f"{name}: the Hub repository's config.json and {WEIGHTS_FILE} are not in the cache and cannot be "
            f"downloaded (HF_HUB_OFFLINE is set, or no network); download them once with network, or use "
            f"local-dir:PATH"
        ) from err
    except huggingface_hub.errors.EntryNotFoundError as err:
        raise OSError(
            f"{name}: the repository has no config.json or {WEIGHTS_FILE} (a Hub folder written by tools/publish.py "
            f"or timm's save_for_hf with safetensors has both)"
        ) from err
    return Path(config), Path(weights)


class HubModel(NamedTuple):
    """What a Hub folder holds: the architecture, the arguments that rebuild it, the weights file, and the inputs the
    weights expect (``preprocessing``: its ``pretrained_cfg``'s input size, mean, std, crop and interpolation)."""

    architecture: str
    model_args: dict[str, Any]
    weights: Path
    preprocessing: dict[str, Any]


# The pretrained_cfg fields of a Hub folder that describe the weights' inputs (timm's resolve_data_config reads them).
PREPROCESSING = ("input_size", "mean", "std", "crop_pct", "crop_mode", "interpolation")


def hub_model(name: str) -> HubModel:
    """The model an ``hf-hub:ORG/NAME[@REVISION]`` or ``local-dir:PATH`` folder holds, from its ``config.json``
    (timm's format: ``architecture``, ``num_classes``, ``model_args``); ``create_model(name)`` builds it."""
    config_path, weights_path = _hub_files(name)
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not config.get("architecture"):
        raise ValueError(f"{name}: config.json names no architecture; it is not a timm or densebackbones Hub folder")
    model_args = dict(config.get("model_args") or {})
    if config.get("num_classes") is not None:
        model_args.setdefault("num_classes", config["num_classes"])
    cfg = config.get("pretrained_cfg") or {}
    preprocessing = {key: cfg[key] for key in PREPROCESSING if key in cfg}
    return HubModel(config["architecture"], model_args, weights_path, preprocessing)


def push_hub_folder(out_dir: str | Path, repo_id: str, private: bool = False, api: Any = None) -> str:
    """Upload a Hub folder to ``repo_id`` (created if missing); returns the commit URL. Needs a token
    (``huggingface-cli login`` or ``HF_TOKEN``)."""
    api = api or huggingface_hub.HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    info = api.upload_folder(folder_path=str(out_dir), repo_id=repo_id, commit_message="densebackbones: publish a run")
    return str(getattr(info, "commit_url", info))
