"""Argument and input checks every model constructor shares, so that a bad value fails where it enters with one line
naming the argument, the value and what is allowed, instead of building a degenerate model (``growth_rate=0``: a
10-parameter DenseNet) or failing later inside torch (a uint8 batch: "expected scalar type Byte but found Float").

Each check returns the value it accepted (sequences as tuples) and raises ``TypeError`` for a value of the wrong type
and ``ValueError`` for one out of range.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx
from torch import Tensor

from ..registry import is_model, list_models, model_task, unknown_name_error

__all__ = [
    "GLOBAL_POOLS",
    "check_backbone_name",
    "check_choice",
    "check_flag",
    "check_input_dtype",
    "check_int",
    "check_ints",
    "check_layer_fn",
    "check_number",
    "check_optional_dict",
    "check_per_stage",
    "check_pool",
    "check_rate",
]

# timm's pool types (create_classifier / SelectAdaptivePool2d); '' leaves the map unpooled.
GLOBAL_POOLS = ("avg", "max", "avgmax", "catavgmax", "fast", "fastavg", "fastmax", "fastavgmax", "fastcatavgmax", "")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _fix(hint: str) -> str:
    return f" ({hint})" if hint else ""


def check_int(name: str, value: Any, minimum: int = 1, hint: str = "", maximum: int | None = None) -> int:
    """A whole number in ``minimum..maximum``."""
    if not _is_int(value):
        raise TypeError(
            f"{name} must be a whole number >= {minimum}, got {value!r} ({type(value).__name__}){_fix(hint)}"
        )
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f"in {minimum}..{maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value!r}{_fix(hint)}")
    return int(value)


def check_ints(
    name: str, value: Any, minimum: int = 1, length: int | None = None, hint: str = "", what: str = "entry"
) -> tuple[int, ...]:
    """A non-empty list or tuple of whole numbers >= ``minimum`` (exactly ``length`` of them when given)."""
    shape = f"{length} whole numbers" if length is not None else "a non-empty list or tuple of whole numbers"
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise TypeError(f"{name} must be {shape} >= {minimum}, got {value!r} ({type(value).__name__}){_fix(hint)}")
    if length is not None and len(value) != length:
        raise ValueError(f"{name} must have {length} entries (one per {what}), got {len(value)}: {value!r}{_fix(hint)}")
    if not value:
        raise ValueError(f"{name} must not be empty, got {value!r}{_fix(hint)}")
    for i, item in enumerate(value):
        if not _is_int(item):
            raise TypeError(f"{name} must hold whole numbers, got {value!r} ({item!r} at index {i}){_fix(hint)}")
        if item < minimum:
            raise ValueError(
                f"{name} entries must be at least {minimum}, got {value!r} ({item!r} at index {i}){_fix(hint)}"
            )
    return tuple(int(v) for v in value)


def check_per_stage(name: str, value: Any, stages: int, minimum: int = 1, what: str = "stage") -> tuple[int, ...]:
    """One whole number for every stage, or a sequence with one per stage."""
    if _is_int(value):
        return (
            check_int(name, value, minimum, f"one value for all {stages} {what}s, or a tuple of {stages}"),
        ) * stages
    return check_ints(name, value, minimum, stages, what=what)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """A finite real number in the interval given by ``low``/``high`` (open ends where ``*_open``)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number in {interval}, got {value!r} ({type(value).__name__}){_fix(hint)}")
    number = float(value)
    ok = math.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}{_fix(hint)}")
    return number


def check_rate(name: str, value: Any) -> float:
    """A dropout probability in [0, 1)."""
    return check_number(name, value, 0.0, 1.0, high_open=True, hint="a dropout probability; 0 turns it off")


def check_choice(name: str, value: Any, choices: Sequence[Any], hint: str = "") -> Any:
    """One of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"unknown {name} {value!r}; use one of {options}{_fix(hint)}")
    return value


def check_pool(name: str, value: Any) -> str:
    """A timm global pool type."""
    return check_choice(name, value, GLOBAL_POOLS, "'' keeps the unpooled map")


def check_flag(name: str, value: Any) -> bool:
    """True or False (not a string such as 'False', which is true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def check_layer_fn(name: str, value: Any, example: str) -> Callable[..., Any]:
    """A callable that builds a layer (a class such as ``nn.BatchNorm2d``), not a name or an instance."""
    if not callable(value) or isinstance(value, torch.nn.Module):
        raise TypeError(
            f"{name} must be a callable that builds the layer (a class such as {example}), got {value!r} "
            f"({type(value).__name__})"
        )
    return value


def check_optional_dict(name: str, value: Any) -> dict[str, Any]:
    """None or a dict of keyword arguments."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict of keyword arguments or None, got {value!r} ({type(value).__name__})")
    return value


def _is_symbolic(x: Any) -> bool:
    # torch.fx symbolic tracing hands Proxies through forward, and a check that branches on one breaks tracing;
    # TorchScript compiles no Python checks. Both leave the check to eager runs.
    return torch.jit.is_scripting() or isinstance(x, torch.fx.Proxy)


def check_input_dtype(x: Any, pretrained_cfg: dict[str, Any] | None = None) -> None:
    """Models take float image batches: name the conversion for integer ones (uint8 images) and for non-tensors.
    ``pretrained_cfg`` (the model's) supplies the normalisation statistics the message quotes."""
    if _is_symbolic(x):
        return
    if not isinstance(x, Tensor):
        raise TypeError(
            f"model input must be a torch.Tensor image batch (N, C, H, W), got {type(x).__name__}; convert it, e.g. "
            f"torch.as_tensor(images).permute(0, 3, 1, 2).float().div(255) for (N, H, W, C) uint8 arrays"
        )
    if not x.is_floating_point():
        stats = ""
        mean, std = (pretrained_cfg or {}).get("mean"), (pretrained_cfg or {}).get("std")
        if mean is not None and std is not None:
            stats = f" (mean {tuple(round(float(m), 4) for m in mean)}, std {tuple(round(float(s), 4) for s in std)})"
        raise TypeError(
            f"input is {x.dtype}; models take float images: convert and normalise, e.g. x.float().div(255) then "
            f"subtract model.pretrained_cfg['mean'] and divide by model.pretrained_cfg['std']{stats}"
        )


def check_head(num_classes: Any, in_chans: Any, drop_rate: Any, global_pool: Any = "avg") -> None:
    """What every classification backbone takes: classes (0: no classifier), input channels, head dropout, pool."""
    check_int("num_classes", num_classes, 0, "0 removes the classifier")
    check_int("in_chans", in_chans, 1, "3 for RGB, 1 for grey images")
    check_rate("drop_rate", drop_rate)
    check_pool("global_pool", global_pool)


def check_layers(norm_layer: Any, act_layer: Any, memory_efficient: Any) -> None:
    """The layer factories and the memory flag of the dense families."""
    check_layer_fn("norm_layer", norm_layer, "nn.BatchNorm2d")
    check_layer_fn("act_layer", act_layer, "nn.ReLU")
    check_flag("memory_efficient", memory_efficient)


def check_backbone_name(name: str, value: Any) -> str:
    """A registered classification backbone (alias and ``arch.tag`` accepted), for the heads built on one."""
    if isinstance(value, str) and is_model(value) and model_task(value) == "classification":
        return value
    lister = "densebackbones.list_models(task='classification')"
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a registered backbone's name, got {value!r} ({type(value).__name__}); see {lister}"
        )
    if is_model(value):
        detail = f"it is a {model_task(value)} model; {lister} lists the backbones, e.g. 'densenet_bc121_k32'"
    else:
        detail = str(unknown_name_error(value, list_models(task="classification"), lister))
    raise ValueError(f"{name}={value!r} is not a registered backbone: {detail}")
