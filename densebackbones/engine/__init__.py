"""Training engine shared by every task: trainer, checkpoints, logs, metrics, configs, distributed helpers."""

from .checkpoint import atomic_save, get_rng_state, load_checkpoint, set_rng_state
from .config import DEFAULTS, check_config, load_config, merge_defaults
from .distributed import DistInfo, ShardSampler, init_distributed
from .logs import CSVLogger, plot_run, read_csv
from .metrics import TopKAccuracy
from .optim import build_optimizer, build_scheduler, scaled_lr
from .trainer import NonFiniteLossError, Trainer, evaluate

__all__ = [
    "DEFAULTS",
    "CSVLogger",
    "DistInfo",
    "NonFiniteLossError",
    "ShardSampler",
    "TopKAccuracy",
    "Trainer",
    "atomic_save",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "check_config",
    "get_rng_state",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "merge_defaults",
    "plot_run",
    "read_csv",
    "scaled_lr",
    "set_rng_state",
]
