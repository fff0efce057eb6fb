"""Publish a finished run to the Hugging Face Hub.

python tools/publish.py work_dirs/densenet_bc_digits hub/densenet_bc_digits [--repo-id ORG/NAME] [--private]

Writes OUT_DIR in timm's Hub format (``config.json`` with the architecture and the arguments that rebuild it,
``model.safetensors``) with a model card (``README.md``: the run's metrics, data, command and config), after loading
the weights into the rebuilt model; ``--repo-id`` then uploads it with ``huggingface_hub`` (a token from
``huggingface-cli login`` or ``HF_TOKEN``). Load it back with ``densebackbones.create_model("hf-hub:ORG/NAME",
pretrained=True)`` or ``"local-dir:OUT_DIR"``, or timm's ``create_model`` the same way after ``import densebackbones``
(densebackbones/publish.py, densebackbones/hub.py).
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import cli
from densebackbones.hub import push_hub_folder
from densebackbones.publish import write_hub_folder


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="a finished run as a Hugging Face Hub folder, optionally pushed")
    parser.add_argument("work_dir", help="the run's work dir (with final.safetensors and final.json)")
    parser.add_argument("out_dir", help="the folder to write (new or empty, or a previous Hub folder)")
    parser.add_argument("--repo-id", help="upload the folder to this Hub repository (ORG/NAME)")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    return parser


def main(args: argparse.Namespace) -> None:
    folder = write_hub_folder(args.work_dir, args.out_dir, repo_id=args.repo_id)
    load = f"create_model('local-dir:{folder}', pretrained=True)"
    print(f"wrote {folder}: config.json, model.safetensors, README.md (load it: {load})")
    if args.repo_id:
        print(f"pushed: {push_hub_folder(folder, args.repo_id, private=args.private)}")


if __name__ == "__main__":
    cli.run_main(main, get_args_parser())
