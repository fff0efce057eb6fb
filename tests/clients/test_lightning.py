"""Lightning (the 'dev' extra) trains our models as users write it: a ``LightningModule`` over a registered backbone,
fitted by Lightning's own ``Trainer``. CondenseNet given ``condense_steps`` condenses under it exactly as under a
plain loop with the engine's progress hook (which tests/models/test_condense_anywhere.py holds to our trainer); bf16
autocast runs in every memory mode; DDP on two CPU processes (Lightning's launcher re-runs the script) ends with the
same weights and masks on both ranks, condensed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn as nn

import densebackbones as db
from densebackbones.layers import MEMORY_MODES
from densebackbones.models.condensenet import convert

TESTS = Path(__file__).resolve().parents[1]  # the DDP script imports this module from there
STEPS = 16  # condensation over the first half: stages rise at steps 2, 4 and 6 (C = 4)
TINY = dict(block_config=(2, 2, 2), growth_rate=(4, 4, 8), num_classes=3, proj_drop_rate=0.1)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    images = [torch.randn(4, 3, 8, 8, generator=generator) for _ in range(STEPS)]
    return [(x, torch.randint(0, 3, (4,), generator=generator)) for x in images]


class Classifier(L.LightningModule):
    """What a Lightning user writes around a backbone from the registry."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def training_step(self, batch, step):
        x, y = batch
        torch.manual_seed(step)  # the plain loop below draws the same dropout masks
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def fit(module: L.LightningModule, **trainer_args) -> None:
    trainer = L.Trainer(
        max_steps=STEPS, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **trainer_args,
    )  # fmt: skip
    trainer.fit(module, torch.utils.data.DataLoader(batches(), batch_size=None))


def plain_loop_with_the_engines_hook(model: nn.Module) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step, (x, y) in enumerate(batches()):
        model.set_training_progress(step / STEPS)  # what densebackbones' trainer does before each step
        torch.manual_seed(step)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def condensenet(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return db.create_model("condensenet86_cifar", **dict(TINY, **kwargs))


@pytest.mark.integration
def test_lightning_condenses_condensenet_exactly_as_the_engine():
    lightning_model = condensenet(condense_steps=STEPS)
    fit(Classifier(lightning_model))
    reference = condensenet()
    plain_loop_with_the_engines_hook(reference)
    assert all(conv.condensed for conv in lightning_model.learned_convs())
    theirs = lightning_model.state_dict()
    for name, value in reference.state_dict().items():
        assert torch.equal(value, theirs[name]), name  # masks, stages and every weight, bit for bit
    assert convert(lightning_model).converted


@pytest.mark.integration
@pytest.mark.parametrize("memory_mode", MEMORY_MODES)
def test_bf16_mixed_precision(memory_mode):
    torch.manual_seed(0)
    model = db.create_model("densenet_bc100_k12_cifar", growth_rate=4, block_config=(2, 2, 2), num_classes=3,
                            memory_mode=memory_mode, drop_path_rate=0.1)  # fmt: skip
    before = [p.detach().clone() for p in model.parameters()]
    module = Classifier(model)
    fit(module, precision="bf16-mixed")
    assert module.trainer.precision == "bf16-mixed"
    assert torch.isfinite(module.trainer.callback_metrics["loss"])
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every parameter trained


DDP_SCRIPT = """
import sys

import lightning as L
import torch

sys.path.insert(0, {tests!r})
from clients.test_lightning import Classifier, batches, condensenet, STEPS

model = condensenet(condense_steps=STEPS)
trainer = L.Trainer(max_steps=STEPS, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Classifier(model), torch.utils.data.DataLoader(batches(), batch_size=None))
torch.save(model.state_dict(), f"{{sys.argv[1]}}/rank{{trainer.global_rank}}.pt")
"""


@pytest.mark.integration
def test_ddp_on_two_cpu_processes(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(TESTS))))
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name, value in rank0.items():
        if "running_" in name or name.endswith("num_batches_tracked"):
            continue  # each rank's BN statistics are its own last batch's (torch's DDP broadcasts them before forward)
        assert torch.equal(value, rank1[name]), name  # DDP kept the ranks in step: weights, masks, stages, count
    model = condensenet(condense_steps=STEPS)
    model.load_state_dict(rank0)
    assert all(conv.condensed for conv in model.learned_convs()) and int(model.condense_forwards) == STEPS
