"""Run logs that a plot tool can re-read: one CSV per kind of row (train, eval), appended on resume."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_text, write_failure

__all__ = ["CSVLogger", "LogWriteError", "read_csv", "plot_run"]


class LogWriteError(OSError):
    """A log row that could not be written (disk full, quota); the message names the file and the free space."""


class CSVLogger:
    """Append rows to ``path``; the first row fixes the columns (a resumed run appends with the same header)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.fieldnames: list[str] | None = None
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as handle:
                self.fieldnames = next(csv.reader(handle), None)

    def drop_rows_after(self, step: int) -> int:
        """Remove the rows logged after optimiser step ``step`` (those of a run resumed from a checkpoint written at
        that step, which will be logged again); returns how many were removed. The file is rewritten atomically."""
        if self.fieldnames is None or "step" not in self.fieldnames:
            return 0
        with open(self.path, newline="") as handle:
            text = handle.read()
        rows = list(csv.DictReader(text.splitlines()))
        # A row cut short (a process killed, or a full disk, while appending it) has fields missing or extra (the
        # next row appended to its line): it is dropped too, and so is a last row without its line end.
        keep = [r for r in rows if _as_float(r.get("step")) <= step and None not in r.values() and None not in r]
        if not text.endswith("\n") and keep and rows and keep[-1] is rows[-1]:
            keep.pop()
        if len(keep) == len(rows):
            return 0
        kept = io.StringIO(newline="")
        writer = csv.DictWriter(kept, fieldnames=self.fieldnames)
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(self.path, kept.getvalue(), "the log")
        return len(rows) - len(keep)

    def log(self, row: dict[str, Any]) -> None:
        new_file = self.fieldnames is None
        if new_file:
            self.fieldnames = list(row)
        unknown = set(row) - set(self.fieldnames)
        if unknown:
            raise ValueError(f"{self.path}: columns {sorted(unknown)} are not in the header {self.fieldnames}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(self.path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fieldnames)
                if new_file:
                    writer.writeheader()
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
                handle.flush()
        except OSError as err:  # a row cut short is dropped when the run resumes (drop_rows_after)
            raise LogWriteError(write_failure(self.path, err, "the log", "the checkpoints are as they were")) from err


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.inf  # a row without a readable step counts as past any checkpoint


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """Rows of a log CSV with numeric values as floats."""
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            parsed = {}
            for key, value in row.items():
                try:
                    parsed[key] = float(value)
                except (TypeError, ValueError):
                    parsed[key] = math.nan
            rows.append(parsed)
    return rows


def plot_run(work_dir: str | Path, out: str | Path | None = None) -> Path:
    """Plot train loss, learning rate and eval metrics of a run (``train.csv``, ``eval.csv``) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work_dir = Path(work_dir)
    train_path, eval_path = work_dir / "train.csv", work_dir / "eval.csv"
    if not train_path.exists():
        raise FileNotFoundError(f"no train.csv in {work_dir}; is it a training run's work dir?")
    train = read_csv(train_path)
    evals = read_csv(eval_path) if eval_path.exists() else []
    metric_keys = [k for k in (evals[0] if evals else {}) if k not in ("epoch", "step", "time")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    x = [r["epoch_float"] for r in train]
    axes[0].plot(x, [r["loss"] for r in train], label="train loss")
    if evals and "loss" in evals[0]:
        axes[0].plot([r["epoch"] for r in evals], [r["loss"] for r in evals], "o-", label="eval loss")
    axes[0].set_xlabel("epoch"), axes[0].set_ylabel("loss"), axes[0].legend()
    axes[1].plot(x, [r["lr"] for r in train])
    axes[1].set_xlabel("epoch"), axes[1].set_ylabel("learning rate")
    if any(r["lr"] > 0 for r in train):  # a log scale where it can show something (a cosine's last step is 0)
        axes[1].set_yscale("log")
    plotted = [key for key in metric_keys if key != "loss" and not key.startswith(("IoU_", "AP_voc07_"))]
    for key in plotted:  # per-class values would crowd the plot; they stay in eval.csv
        axes[2].plot([r["epoch"] for r in evals], [r[key] for r in evals], "o-", label=key)
    axes[2].set_xlabel("epoch"), axes[2].set_ylabel("eval metric")
    if plotted:  # no evaluation yet (eval_interval > 1): nothing to label
        axes[2].legend()
    fig.suptitle(work_dir.name)
    fig.tight_layout()
    out = Path(out) if out else work_dir / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
