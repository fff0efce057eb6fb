"""Checks shared by every model family: feature indices and checkpoints that do not fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

__all__ = ["check_out_indices", "describe_state_dict_mismatch"]


def _levels(feature_info: Sequence[dict[str, Any]]) -> str:
    return "; ".join(
        f"{i}: {info['module']} ({info['num_chs']} ch, stride {info['reduction']})" for i, info in enumerate(feature_info)
    )


def check_out_indices(
    feature_info: Sequence[dict[str, Any]],
    indices: int | Sequence[int] | None,
    model_name: str = "model",
) -> int | list[int] | None:
    """Validate timm-style feature indices: None (all), an int n (the last n) or a sequence of level indices.

    Returns them unchanged in meaning (a sequence becomes a list of absolute indices); raises ``ValueError`` naming
    the model's levels when they do not fit.
    """
    n = len(feature_info)
    if indices is None:
        return None
    if isinstance(indices, bool) or not isinstance(indices, (int, Sequence)):
        raise ValueError(f"out_indices must be an int or a sequence of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(
                f"out_indices={indices} asks for the last {indices} levels but {model_name} has {n} "
                f"(use 1..{n}, or a tuple of levels). Levels: {_levels(feature_info)}"
            )
        return indices
    absolute = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -n <= i < n:
            raise ValueError(
                f"out_indices {tuple(indices)} is out of range for {model_name}, which has {n} feature levels "
                f"(0..{n - 1}, or -{n}..-1). Levels: {_levels(feature_info)}"
            )
        absolute.append(i % n)
    if not absolute:
        raise ValueError(f"out_indices is empty; pick levels from: {_levels(feature_info)}")
    if len(set(absolute)) != len(absolute) or absolute != sorted(absolute):
        raise ValueError(f"out_indices {tuple(indices)} must be increasing and unique (levels: {_levels(feature_info)})")
    return absolute


def _fmt_keys(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def describe_state_dict_mismatch(
    state_dict: dict[str, Tensor],
    model: nn.Module,
    find_matching_archs: Callable[[dict[str, Tensor]], tuple[str, list[str]]] | None = None,
) -> None:
    """Raise a ``ValueError`` that says exactly why ``state_dict`` does not fit ``model`` (and what would).

    The classifier is skipped when timm will drop it anyway (the model's ``num_classes`` differs from its pretrained
    config's), and the first conv when only its input channels differ (timm adapts them to ``in_chans``).
    """
    model_sd = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    skip = set()
    classifier = cfg.get("classifier")
    if classifier and getattr(model, "num_classes", None) != cfg.get("num_classes"):
        skip |= {f"{classifier}.weight", f"{classifier}.bias"}
    first_conv = cfg.get("first_conv")
    if first_conv and f"{first_conv}.weight" in state_dict and f"{first_conv}.weight" in model_sd:
        theirs, ours = state_dict[f"{first_conv}.weight"].shape, model_sd[f"{first_conv}.weight"].shape
        if len(theirs) == len(ours) == 4 and theirs[0] == ours[0] and theirs[2:] == ours[2:]:
            skip.add(f"{first_conv}.weight")

    missing = [k for k in model_sd if k not in state_dict and k not in skip]
    unexpected = [k for k in state_dict if k not in model_sd and k not in skip]
    mismatched = [
        k for k, v in model_sd.items() if k in state_dict and k not in skip and state_dict[k].shape != v.shape
    ]
    if not (missing or unexpected or mismatched):
        return

    if classifier and not missing and not unexpected and set(mismatched) <= {f"{classifier}.weight", f"{classifier}.bias"}:
        theirs = state_dict[f"{classifier}.weight"].shape[0]
        raise ValueError(
            f"the checkpoint's classifier has {theirs} outputs but the model has {model.num_classes}. Create the model "
            f"with num_classes={theirs} to keep it, or pass pretrained_cfg_overlay=dict(file=..., num_classes={theirs}) "
            f"with num_classes={model.num_classes} to drop it and train a new classifier."
        )
    lines = ["the checkpoint does not fit this model's architecture."]
    if mismatched:
        shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(model_sd[k].shape)}" for k in mismatched]
        lines.append(f"Shape mismatches ({len(mismatched)}): {_fmt_keys(shapes, 4)}")
    if missing:
        lines.append(f"Missing in checkpoint ({len(missing)}): {_fmt_keys(missing)}")
    if unexpected:
        lines.append(f"Not in model ({len(unexpected)}): {_fmt_keys(unexpected)}")
    if find_matching_archs is not None:
        desc, matches = find_matching_archs(state_dict)
        lines.append(f"The checkpoint looks like: {desc}.")
        lines.append(
            f"Registered models with that architecture: {', '.join(matches)}."
            if matches
            else "No registered model has that architecture; build DenseNet(...) with those arguments."
        )
    raise ValueError(" ".join(lines))
