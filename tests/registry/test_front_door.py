"""One front door: every registered model of every task by name (ours, timm-style configs, mmengine), mmpretrain's
arch names, and the package layout's import direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import tiny_input

import densebackbones as db
from densebackbones.mm import resolve_arch
from densebackbones.tasks import SegmentationTask

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", db.list_models())
def test_every_registered_model_builds_and_gives_its_tasks_output(name):
    task = db.model_task(name)
    model = db.create_model(name).eval()
    assert model.pretrained_cfg["architecture"] == name
    with torch.no_grad():
        if task == "classification":  # MSDNet: every exit's logits
            out = model(tiny_input(name, batch=1))
            for logits in out if isinstance(out, list) else [out]:
                assert logits.shape == (1, model.num_classes)
        elif task == "segmentation":  # logits at the input's resolution
            assert model(torch.randn(1, 3, 32, 48)).shape == (1, model.num_classes, 32, 48)
        else:  # detection: one box and one score vector per default box, at the size the boxes were made for
            size = model.prior_config.image_size
            loc, conf = model(torch.randn(1, 3, size, size))
            assert loc.shape == (1, len(model.priors), 4) and conf.shape == (1, len(model.priors), model.num_classes)


def test_tasks_partition_the_registry():
    by_task = {task: db.list_models(task=task) for task in db.TASKS}
    assert sorted(sum(by_task.values(), [])) == db.list_models()
    assert "fc_densenet103" in by_task["segmentation"] and "dsod300" in by_task["detection"]
    assert "densenet_bc121_k32" in by_task["classification"]
    assert db.list_models("fc_*", task="segmentation")[:3] == ["fc_densenet103", "fc_densenet56", "fc_densenet67"]
    with pytest.raises(ValueError, match="unknown task 'detect'"):
        db.list_models(task="detect")


@pytest.mark.parametrize(("typo", "suggested"), [("fc_densenet1033", "fc_densenet103"), ("dsod30", "dsod300")])
def test_unknown_names_list_the_closest_of_any_task(typo, suggested):
    with pytest.raises(ValueError, match=f"Unknown model '{typo}'. Closest registered names: {suggested}"):
        db.create_model(typo)
    with pytest.raises(KeyError, match=f"Closest registered names: {suggested}"):
        db.MODELS.build(dict(type=f"densebackbones.{typo}"))
    assert typo not in db.MODELS and suggested in db.MODELS


def test_backbone_options_on_a_head_are_refused():
    with pytest.raises(ValueError, match="features_only/out_indices apply to backbones; 'fc_densenet56' is a segm"):
        db.create_model("fc_densenet56", features_only=True)


def test_model_arguments_come_from_the_registered_class():
    assert {"growth_rate", "layers_per_block", "pretrained_cfg_overlay"} <= set(db.model_arg_names("fc_densenet56"))
    assert {"encoder", "encoder_kwargs"} <= set(db.model_arg_names("fc_densenet_bc121_k32"))
    assert "stem_chs" in db.model_arg_names("dsod_ds64_192_48_1") and "stem_chs" not in db.model_arg_names(
        "densenet121"
    )
    assert "priors" in db.model_arg_names("dsod300")


def test_a_config_naming_another_tasks_model_is_refused():
    raw = dict(model=dict(type="densenet_bc121_k32"), data=dict(dataset="shapes"))
    with pytest.raises(ValueError, match="'densenet_bc121_k32' is a classification model; this tool trains segm"):
        SegmentationTask().model_arg_names(raw)
    missing = "model.type is missing; name a registered segmentation model: deeplabv3_densenet121, .*fc_densenet103"
    with pytest.raises(KeyError, match=missing):
        SegmentationTask().model_arg_names(dict(model=dict()))


def test_head_weights_load_through_the_front_door(tmp_path):
    source = db.create_model("fc_densenet56", num_classes=4, growth_rate=4, layers_per_block=1)
    torch.save(source.state_dict(), tmp_path / "seg.pth")
    loaded = db.create_model(
        "fc_densenet56",
        num_classes=4,
        growth_rate=4,
        layers_per_block=1,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(tmp_path / "seg.pth")),
    )
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))
    assert loaded.pretrained_cfg["file"] == str(tmp_path / "seg.pth")
    with pytest.raises(
        ValueError, match="dsod300 has no weights to download; .*caffe_voc0712.*pretrained_cfg_overlay=dict"
    ):
        db.create_model("dsod300", pretrained=True)
    with pytest.raises(ValueError, match="names the file .*seg.pth' but pretrained=False, so it would not be loaded"):
        db.create_model("fc_densenet56", pretrained_cfg_overlay=dict(file=str(tmp_path / "seg.pth")))


MMENGINE_SCRIPT = """
import densebackbones  # alone: no import of densebackbones.heads or densebackbones.mm
from mmengine.registry import MODELS
built = [
    MODELS.build(dict(type="densebackbones.densenet_bc100_k12_cifar", num_classes=3)),
    MODELS.build(dict(type="densebackbones.fc_densenet56", num_classes=3, growth_rate=4, layers_per_block=1)),
    MODELS.build(dict(type="densebackbones.dsod300", num_classes=3)),
    MODELS.build(dict(type="densebackbones.DenseNetBackbone", arch="121", out_indices=(4,))),
]
print(" ".join(type(m).__name__ for m in built))
try:
    MODELS.build(dict(type="densebackbones.fc_densenet1033"))
except KeyError as err:
    print(err)
"""


def test_mmengine_builds_every_task_after_importing_the_package_alone():
    result = subprocess.run([sys.executable, "-c", MMENGINE_SCRIPT], capture_output=True, text=True, check=True)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "DenseNet FCDenseNet DSOD DenseNetBackbone"
    assert lines[1].startswith("Unknown model 'fc_densenet1033'. Closest registered names: fc_densenet103")


@pytest.mark.parametrize(("arch", "ours"), [("121", "densenet_bc121_k32"), ("161", "densenet_bc161_k48")])
def test_mmpretrain_arch_names(arch, ours):
    assert resolve_arch(arch) == ours
    backbone = db.MODELS.build(dict(type="DenseNetBackbone", arch=arch))
    with torch.device("meta"):
        reference = db.create_model(ours, num_classes=0)
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in reference.parameters())


def test_mmpretrain_arch_dict():
    arch = dict(growth_rate=32, depths=(6, 12, 24, 16), init_channels=64)
    assert resolve_arch(arch) == dict(growth_rate=32, block_config=(6, 12, 24, 16), stem_width=64)
    assert resolve_arch("169") == "densenet_bc169_k32" and resolve_arch("densenet_bc201_k32") == "densenet_bc201_k32"
    with pytest.raises(ValueError, match=r"mmpretrain's arch dict needs exactly \['depths', 'growth_rate', 'init_c"):
        resolve_arch(dict(growth_rate=32, depths=(6, 12, 24, 16)))
    with pytest.raises(ValueError, match="Unknown model '122'"):
        db.MODELS.build(dict(type="DenseNetBackbone", arch="122"))


def test_memory_mode_lives_in_the_blocks():
    model = db.create_model("densenet_bc100_k12_cifar", memory_mode="efficient")
    assert model.memory_mode == "efficient" and model.grad_checkpointing
    db.layers.set_memory_mode(model, "plain")  # switched on the blocks: the model's view follows
    assert model.memory_mode == "plain" and not model.grad_checkpointing
    model.features.denseblock1.memory_mode = "buffer"
    assert model.memory_mode == "mixed"


# ------------------------------------------------------------------------------------------- import direction
PACKAGE = REPO / "densebackbones"
# Which packages each may import from densebackbones (one way: registry <- layers <- models <- heads <- tasks).
ALLOWED = {
    "registry": set(),
    "flops": set(),  # operation counts (torch.utils.flop_counter): a leaf that models and tools use
    "layers": set(),
    "models": {"flops", "layers", "registry"},
    "heads": {"layers", "models", "registry"},
    "data": set(),
    "engine": set(),
    "tasks": {"data", "engine", "flops", "heads", "models", "registry"},
}


def _library_files() -> dict[str, list[Path]]:
    files = {name: sorted((PACKAGE / name).glob("*.py")) for name in ALLOWED if (PACKAGE / name).is_dir()}
    files["heads"] = sorted((REPO / "heads").glob("*.py"))
    files["registry"] = [PACKAGE / "registry.py"]
    files["flops"] = [PACKAGE / "flops.py"]
    return files


def _imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """(densebackbones subpackage imported, whether the import is inside a function) for every import."""
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package (heads/ is densebackbones.heads)
                base = ["densebackbones", package][: 3 - node.level]
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            else:
                module = node.module or ""
        elif isinstance(node, ast.Import):
            module = node.names[0].name
        else:
            continue
        if module.startswith("densebackbones.") or module == "densebackbones":
            found.append((module.split(".")[1] if "." in module else "densebackbones", id(node) in inside))
    return found


def test_imports_run_one_way_and_at_module_top():
    problems = []
    for package, files in _library_files().items():
        for path in files:
            for imported, in_function in _imports(path, package):
                if in_function:
                    problems.append(f"{path.relative_to(REPO)} imports densebackbones.{imported} inside a function")
                elif imported not in ALLOWED[package] | {package}:
                    problems.append(f"{path.relative_to(REPO)} ({package}) imports densebackbones.{imported}")
    assert not problems, "\n".join(problems)


def test_the_engine_imports_no_task_model_head_or_data_set():
    for path in (PACKAGE / "engine").glob("*.py"):
        imported = {module for module, _ in _imports(path, "engine")}
        assert not imported - {"engine"}, (path.name, imported)


def test_dense_layers_and_the_shared_buffer_do_not_import_each_other_both_ways():
    source = (PACKAGE / "layers" / "shared_buffer.py").read_text()
    assert "from .dense" not in source and "import dense" not in source
