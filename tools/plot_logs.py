"""Plot a run's training curves (train.csv, eval.csv) into a PNG; the trainer also calls this at each epoch end.

python tools/plot_logs.py WORK_DIR [WORK_DIR ...] [--out curves.png]
"""

from __future__ import annotations

import argparse

import cpu_env  # noqa: F401  (first: OpenMP's spin setting before torch loads)

from densebackbones.engine import plot_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dirs", nargs="+")
    parser.add_argument("--out", help="output PNG (only with one work dir; default WORK_DIR/curves.png)")
    args = parser.parse_args()
    if args.out and len(args.work_dirs) > 1:
        parser.error("--out takes one work dir")
    for work_dir in args.work_dirs:
        print(plot_run(work_dir, args.out))


if __name__ == "__main__":
    main()
