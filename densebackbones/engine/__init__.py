"""Training engine shared by every task: trainer, checkpoints, logs, configs, distributed helpers, the tools'
command line. It knows no task, model or data set: a task adapter (``densebackbones.tasks``) supplies those."""

from .checkpoint import atomic_save, export_weights, get_rng_state, load_checkpoint, set_rng_state
from .config import DEFAULTS, check_config, load_config, merge_defaults
from .distributed import DistInfo, ShardSampler, distributed_session, init_distributed
from .hooks import EmaCopiesBuffers, RegularizedModel, TrainingProgressAware
from .logs import CSVLogger, plot_run, read_csv
from .optim import build_optimizer, build_scheduler, scaled_lr
from .task import TaskRecord
from .trainer import NonFiniteLossError, Trainer, evaluate, evaluate_record

__all__ = [
    "DEFAULTS",
    "CSVLogger",
    "DistInfo",
    "EmaCopiesBuffers",
    "NonFiniteLossError",
    "RegularizedModel",
    "ShardSampler",
    "TaskRecord",
    "Trainer",
    "TrainingProgressAware",
    "atomic_save",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "evaluate_record",
    "export_weights",
    "check_config",
    "get_rng_state",
    "distributed_session",
    "init_distributed",
    "load_checkpoint",
    "load_config",
    "merge_defaults",
    "plot_run",
    "read_csv",
    "scaled_lr",
    "set_rng_state",
]
