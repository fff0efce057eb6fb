"""Model registry: our own name -> entrypoint table, timm's registry, and the mmengine registries.

* ``create_model`` / ``list_models`` are timm-style and know only densebackbones models (plus a few aliases such as
  ``densenet121`` that name timm's and torchvision's models).
* Every entrypoint is also registered with timm so that ``timm.create_model(name)`` works after
  ``import densebackbones`` -- except where timm already has that name: timm would replace its own model for the
  whole process (it only warns), so such a name stays timm's and is logged.
* ``MODELS`` is an mmengine ``Registry`` with scope ``densebackbones``, a child of mmengine's root registry, so that
  OpenMMLab configs reach ``type='densebackbones.<Name>'`` after ``custom_imports=dict(imports=['densebackbones'])``.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Callable

import timm
import timm.models
from torch import nn

try:  # mmengine is optional (extra "mm"): models work without it, configs and the OpenMMLab adapter need it.
    from mmengine.registry import MODELS as MMENGINE_MODELS
    from mmengine.registry import Registry
except ImportError:  # pragma: no cover - exercised only in installs without the extra
    Registry = None

__all__ = ["MODELS", "register_model", "create_model", "list_models", "is_model", "model_entrypoint", "MODEL_ALIASES"]

_logger = logging.getLogger(__name__)

MODELS = (
    Registry(
        "model",
        parent=MMENGINE_MODELS,
        scope="densebackbones",
        locations=["densebackbones.models", "densebackbones.mm"],
    )
    if Registry is not None
    else None
)

_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_skipped_in_timm: set[str] = set()

# Names that timm and torchvision use for the paper's ImageNet models. Accepted by our create_model only; in timm's
# registry they remain timm's own models.
MODEL_ALIASES = {
    "densenet121": "densenet_bc121_k32",
    "densenet169": "densenet_bc169_k32",
    "densenet201": "densenet_bc201_k32",
    "densenet161": "densenet_bc161_k48",
}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model entrypoint under its ``__name__`` with densebackbones, timm and mmengine."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(
            f"model {name!r} is registered twice ({fn.__module__} and {_model_entrypoints[name].__module__})"
        )
    _model_entrypoints[name] = fn
    if timm.models.is_model(name) and not getattr(timm.models.model_entrypoint(name), "__module__", "").startswith(
        "densebackbones"
    ):
        # Registering would replace timm's own model process-wide; keep timm's.
        _skipped_in_timm.add(name)
        _logger.info("timm already has a model named %r; it stays timm's (use densebackbones.create_model)", name)
    else:
        timm.models.register_model(fn)
    if MODELS is not None:
        MODELS.register_module(name=name, module=fn)
    return fn


def _resolve_name(name: str) -> tuple[str, str]:
    """Split ``arch.tag``, map aliases, and fail with the closest names for an unknown model."""
    arch, _, tag = name.partition(".")
    arch = MODEL_ALIASES.get(arch, arch)
    if arch not in _model_entrypoints:
        raise unknown_name_error(
            name, sorted(_model_entrypoints) + sorted(MODEL_ALIASES), "densebackbones.list_models()"
        )
    return arch, tag


def unknown_name_error(name: str, known: list[str], lister: str) -> ValueError:
    """A ``ValueError`` for an unknown registry name that lists the closest known names."""
    close = difflib.get_close_matches(name.partition(".")[0], known, n=5, cutoff=0.5)
    hint = f" Closest registered names: {', '.join(close)}." if close else ""
    return ValueError(f"Unknown model {name!r}.{hint} {lister} lists all {len(known)} names.")


def is_model(name: str) -> bool:
    """True if ``name`` (an architecture, alias or ``arch.tag``) is a densebackbones model."""
    try:
        _resolve_name(name)
    except ValueError:
        return False
    return True


def model_entrypoint(name: str) -> Callable[..., nn.Module]:
    """The registered factory function for ``name`` (aliases accepted)."""
    return _model_entrypoints[_resolve_name(name)[0]]


def list_models(filter: str | list[str] = "", pretrained: bool = False) -> list[str]:  # noqa: A002 (timm's name)
    """Registered architecture names, sorted, optionally filtered by wildcard pattern(s).

    Args:
        filter: fnmatch pattern or list of patterns, e.g. ``'*cifar'``.
        pretrained: only architectures with at least one pretrained weight config.
    """
    names = sorted(_model_entrypoints)
    patterns = [filter] if isinstance(filter, str) else list(filter)
    patterns = [p for p in patterns if p]
    if patterns:
        names = [n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if pretrained:
        with_weights = {n.split(".")[0] for n in timm.list_pretrained()}
        names = [n for n in names if n in with_weights]
    return names


def create_model(
    model_name: str,
    pretrained: bool = False,
    features_only: bool = False,
    out_indices: int | tuple[int, ...] | None = None,
    **kwargs,
) -> nn.Module:
    """Create a densebackbones model by registry name, timm-style.

    Args:
        model_name: architecture name (``list_models()``), an alias (``densenet121``), or ``arch.tag`` to pick a
            pretrained config (``densenet_bc121_k32.tv_in1k``).
        pretrained: load the weights named by the pretrained config; a local file is given with
            ``pretrained_cfg_overlay=dict(file='weights.safetensors')``.
        features_only: return a feature extractor whose forward returns the maps listed in ``feature_info``.
        out_indices: which feature levels to return (needs ``features_only=True``).
        **kwargs: model constructor arguments (``num_classes``, ``in_chans``, ``drop_rate``, ``memory_efficient``...)
            and timm builder arguments (``pretrained_cfg``, ``pretrained_cfg_overlay``).
    """
    arch, tag = _resolve_name(model_name)
    if out_indices is not None and not features_only:
        raise ValueError(
            "out_indices needs features_only=True; for a classifier use "
            "model.forward_intermediates(x, indices=...) instead"
        )
    if tag and not kwargs.get("pretrained_cfg"):
        kwargs["pretrained_cfg"] = tag
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = out_indices
    return _model_entrypoints[arch](pretrained=pretrained, **kwargs)
