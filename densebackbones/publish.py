"""A finished run as a Hugging Face Hub folder (densebackbones.hub has the format and the loading side).

:func:`write_hub_folder` reads a run's work dir (``final.safetensors`` and ``final.json``, which every task writes at
the end of training, with ``config.py`` and ``meta.json``), rebuilds the model from the arguments the run recorded,
loads the weights completely, and writes timm's Hub format with ``timm.models.save_for_hf`` (``config.json``,
``model.safetensors``) plus a model card (``README.md``): the run's metrics, data, command and resolved config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm.models
from safetensors.torch import save_file
from torch import nn

from .hub import WEIGHTS_FILE
from .registry import create_model, is_model

__all__ = ["write_hub_folder"]


def _read_run(work_dir: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(final.json's pretrained config, meta.json, config.py's text) of a finished run."""
    final = work_dir / "final.json"
    if not (work_dir / "final.safetensors").is_file() or not final.is_file():
        raise FileNotFoundError(
            f"{work_dir} has no final.safetensors and final.json: the run has not finished; finish it with "
            f"tools/train_*.py CONFIG --work-dir {work_dir} --resume auto (each task writes them at the end)"
        )
    meta_path, config_path = work_dir / "meta.json", work_dir / "config.py"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else ""
    return json.loads(final.read_text(encoding="utf-8")), meta, config_text


def _run_model_args(work_dir: Path, final: dict[str, Any]) -> dict[str, Any]:
    """The arguments that rebuild the run's model, as the run recorded them in final.json (``model_args``)."""
    if "model_args" not in final:
        raise ValueError(
            f"{work_dir}/final.json records no model_args (a run of an earlier densebackbones): its model cannot be "
            f"rebuilt for publishing; export it again with this version (evaluate the run with --resume auto)"
        )
    return dict(final["model_args"])


def _card(arch: str, final: dict[str, Any], meta: dict[str, Any], config_text: str, repo_id: str | None) -> str:
    metrics = final.get("eval") or {}
    rows = "\n".join(f"| {key} | {value:.4g} |" for key, value in metrics.items() if isinstance(value, (int, float)))
    name = f"hf-hub:{repo_id}" if repo_id else "local-dir:THIS_FOLDER"
    classes = final.get("label_names")
    lines = [
        "---",
        "library_name: timm",
        "tags: [image-classification, timm, densebackbones]" if not classes else "tags: [timm, densebackbones]",
        f"license: {final.get('license') or 'apache-2.0'}",
        "---",
        "",
        f"# {arch}, trained with densebackbones",
        "",
        f"`{arch}` ({final.get('paper_ids') or 'densebackbones'}) as trained by the run below. It needs densebackbones "
        "installed and imported (`pip install densebackbones`); without `import densebackbones`, timm answers "
        f'"Unknown model ({arch})".',
        "",
        "```python",
        "import densebackbones as db",
        "",
        f'model = db.create_model("{name}", pretrained=True)  # timm.create_model the same, after the import',
        "```",
        "",
        "## Results of the run (its evaluation split)",
        "",
        "| metric | value |",
        "|---|---|",
        rows or "| (none recorded) | |",
        "",
        "## Run",
        "",
        f"- command: `{meta.get('command', 'unknown')}`",
        f"- git commit: `{meta.get('git_commit', 'unknown')}`; torch {meta.get('torch', '?')} on "
        f"{meta.get('device', '?')} x {meta.get('world_size', 1)}",
    ]
    if classes:
        shown = ", ".join(map(str, classes[:50])) + (" ..." if len(classes) > 50 else "")
        lines.append(f"- classes ({len(classes)}): {shown}")
    config = config_text.rstrip() or "# no config.py in the work dir"
    lines += ["", "## Config (resolved)", "", "```python", config, "```", ""]
    return "\n".join(lines)


def _save_head(model: nn.Module, arch: str, model_args: dict[str, Any], out_dir: Path) -> None:
    """``config.json`` and ``model.safetensors`` in timm's Hub format for a model timm's ``save_for_hf`` cannot
    describe (it reads a classifier's attributes)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, out_dir / WEIGHTS_FILE)
    cfg = {k: v for k, v in dict(model.pretrained_cfg).items() if k not in ("file", "url", "state_dict", "hf_hub_id")}
    config = {"architecture": arch, "num_classes": model_args.get("num_classes"), "model_args": model_args}
    config["pretrained_cfg"] = json.loads(json.dumps(cfg, default=str))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def write_hub_folder(work_dir: str | Path, out_dir: str | Path, repo_id: str | None = None) -> Path:
    """Write a finished run's model as a Hub folder (see the module docstring) into ``out_dir`` (created; refused if it
    holds anything but a previous Hub folder), after checking that the weights load into the architecture."""
    work_dir, out_dir = Path(work_dir), Path(out_dir)
    final, meta, config_text = _read_run(work_dir)
    arch = final.get("architecture")
    if not arch or not is_model(arch):
        raise ValueError(f"{work_dir}/final.json names architecture {arch!r}, which is not a densebackbones model")
    weights, model_args = work_dir / "final.safetensors", _run_model_args(work_dir, final)
    # The run's preprocessing (what its task recorded), not the architecture's default, goes into the Hub config.
    preprocessing = {key: final[key] for key in ("mean", "std", "input_size") if key in final}
    overlay = dict(file=str(weights), **preprocessing)
    model = create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **model_args)
    known = {"config.json", WEIGHTS_FILE, "README.md"}
    if out_dir.exists() and any(p.name not in known for p in out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} holds other files: give a new or empty folder for the Hub files")
    out_dir.mkdir(parents=True, exist_ok=True)
    if timm.models.is_model(arch):  # a backbone: timm writes its own format
        timm.models.save_for_hf(model, out_dir, model_args=model_args, safe_serialization=True)
    else:  # a segmentation or detection model, which timm's writer does not know: the same format by hand
        _save_head(model, arch, model_args, out_dir)
    (out_dir / "README.md").write_text(_card(arch, final, meta, config_text, repo_id), encoding="utf-8")
    return out_dir
