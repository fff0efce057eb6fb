"""A short tour of the library: the model table of every task, a forward pass, feature maps and the
memory-efficient mode of a backbone.

``python tools/demo.py [--model densenet_bc100_k12_cifar]`` (training: ``make train`` or ``tools/train_cls.py``).
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)
import torch

import densebackbones as db


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="densenet_bc100_k12_cifar", help="registered backbone name")
    parser.add_argument("--batch-size", type=int, default=8)
    return parser


def main(args: argparse.Namespace) -> None:
    print(f"densebackbones {db.__version__}: {len(db.list_models())} registered models")
    print(f"{'model':32s} {'task':15s} {'params':>12s}")
    for name in db.list_models():
        with torch.device("meta"):  # counting parameters needs no memory and no initialisation
            model = db.create_model(name)
        print(f"{name:32s} {db.model_task(name):15s} {sum(p.numel() for p in model.parameters()):>12,d}")

    torch.manual_seed(0)
    model = db.create_model(args.model)
    size = model.pretrained_cfg["input_size"]
    images = torch.randn(args.batch_size, *size)
    model.eval()
    with torch.no_grad():
        logits = model(images)
    print(f"\n{args.model}: input {tuple(images.shape)} -> logits {tuple(logits.shape)}")

    features = db.create_model(args.model, features_only=True)
    features.eval()
    with torch.no_grad():
        maps = features(images)
    for info, fmap in zip(features.feature_info.get_dicts(), maps):
        print(f"  level {info['module']:24s} stride {info['reduction']:2d} -> {tuple(fmap.shape)}")

    # One training step in both modes: same loss, same gradients.
    plain = db.create_model(args.model, num_classes=10)
    efficient = db.create_model(args.model, num_classes=10, memory_efficient=True)
    efficient.load_state_dict(plain.state_dict())
    targets = torch.randint(0, 10, (args.batch_size,))
    losses = []
    for model in (plain, efficient):
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        losses.append(loss.item())
    grad_diff = max((p.grad - q.grad).abs().max().item() for p, q in zip(plain.parameters(), efficient.parameters()))
    print(
        f"\nplain loss {losses[0]:.6f}, memory-efficient loss {losses[1]:.6f}, max gradient difference {grad_diff:.2e}"
    )


if __name__ == "__main__":
    main(get_args_parser().parse_args())
