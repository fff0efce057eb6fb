"""Run another project's script with densebackbones' models registered.

``python -m densebackbones.with_models SCRIPT [ARGS...]`` (or ``-m MODULE [ARGS...]``) imports densebackbones, which
registers every model with timm and torchvision, and then runs the script as ``python SCRIPT ARGS`` would: as
``__main__``, with ``sys.argv`` = ``[SCRIPT, *ARGS]`` and the script's folder first on ``sys.path``. It is for the
scripts that create models by name and have no option to import a module first: timm's ``validate.py``,
``inference.py`` and ``benchmark.py`` (timm's ``train.py`` has ``--device-modules densebackbones``), torchvision's
reference scripts, or a process that loads a saved timm model by name. ``torchrun`` takes it as
``torchrun --nproc_per_node=N -m densebackbones.with_models train.py ...``. docs/clients.md has the commands.
"""

from __future__ import annotations

import os
import runpy
import sys

import densebackbones  # noqa: F401  (registers the models with timm and torchvision: the point of this module)

USAGE = (
    "usage: python -m densebackbones.with_models SCRIPT [ARGS...]\n"
    "       python -m densebackbones.with_models -m MODULE [ARGS...]\n"
    "Runs SCRIPT (or MODULE) as __main__ with densebackbones' models registered with timm and torchvision, e.g.\n"
    "  python -m densebackbones.with_models validate.py --model densenet_bc121_k32 --pretrained --data-dir DIR"
)


def main(argv: list[str] | None = None) -> None:
    """Run the script or module ``argv`` names (default: this process's arguments) with the models registered."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        raise SystemExit(0 if argv else 2)
    if argv[0] == "-m":
        if len(argv) < 2:
            raise SystemExit(f"densebackbones.with_models: -m needs a module name\n{USAGE}")
        module = argv[1]
        sys.argv = [module, *argv[2:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    script = argv[0]
    if not os.path.isfile(script):
        raise SystemExit(
            f"densebackbones.with_models: no script {script!r} (from {os.getcwd()}): give the path of a Python "
            f"script, e.g. timm's validate.py, or -m MODULE\n{USAGE}"
        )
    sys.argv = [script, *argv[1:]]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts the script's folder first
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
