"""The one model registry: every model of every task by name, in densebackbones, timm and mmengine.

* ``create_model`` / ``list_models`` are timm-style and build every registered model: backbones
  (``task='classification'``), segmentation models and detectors. A model's task is part of its registration
  (``register_model(task=...)``), and ``list_models(task=...)`` filters by it. A few aliases such as
  ``densenet121`` name timm's and torchvision's backbones.
* Backbones are also registered with timm so that ``timm.create_model(name)`` works after ``import densebackbones``
  -- except where timm already has that name: timm would replace its own model for the whole process (it only
  warns), so such a name stays timm's and is logged.
* ``MODELS`` is an mmengine ``Registry`` with scope ``densebackbones``, a child of mmengine's root registry, holding
  every model by name, so that OpenMMLab configs reach ``type='densebackbones.<name>'`` after
  ``custom_imports=dict(imports=['densebackbones'])``. An unknown name there gets our message (the closest
  registered names of any task), not mmengine's bare "not in the registry".

This module imports no model: the model files import it and register themselves.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import functools
import inspect
import logging
import os
import re
import urllib.error
from collections.abc import Callable

import timm
import timm.models
import torch
import torchvision.models._api as torchvision_models_api  # the registry behind get_model
from torch import nn

from .hub import HUB_PREFIXES, hub_model

try:  # mmengine is optional (extra "mm"): models work without it, configs and the OpenMMLab adapter need it.
    from mmengine.registry import MODELS as MMENGINE_MODELS
    from mmengine.registry import Registry
except ImportError:  # pragma: no cover - exercised only in installs without the extra
    Registry = None

__all__ = [
    "MODELS",
    "MODEL_ALIASES",
    "TASKS",
    "UnknownModelError",
    "create_model",
    "is_model",
    "list_models",
    "model_arg_names",
    "model_class",
    "model_entrypoint",
    "model_task",
    "register_model",
    "unknown_name_error",
]

_logger = logging.getLogger(__name__)

TASKS = ("classification", "segmentation", "detection")
# Arguments of timm's model builder that every registered factory accepts besides the model's own.
BUILDER_ARGS = ("pretrained_cfg", "pretrained_cfg_overlay", "device", "dtype")


class UnknownModelError(KeyError, ValueError):
    """An unknown model name: a ``KeyError`` for mmengine's registry, a ``ValueError`` for ``create_model``; the
    message lists the closest registered names."""

    def __str__(self) -> str:  # KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


_model_entrypoints: dict[str, Callable[..., nn.Module]] = {}
_model_tasks: dict[str, str] = {}
_model_classes: dict[str, type[nn.Module]] = {}
_skipped_in_timm: set[str] = set()

# Names that timm and torchvision use for the paper's ImageNet models. Accepted by our create_model only; in timm's
# registry they remain timm's own models.
MODEL_ALIASES = {
    "densenet121": "densenet_bc121_k32",
    "densenet169": "densenet_bc169_k32",
    "densenet201": "densenet_bc201_k32",
    "densenet161": "densenet_bc161_k48",
}


def unknown_name_error(name: str, known: list[str] | None = None, lister: str = "densebackbones.list_models()"):
    """An :class:`UnknownModelError` for ``name`` that lists the closest of ``known`` (default: every registered
    name and alias)."""
    listed = sorted(_model_entrypoints) if known is None else known  # what the lister prints (no aliases)
    candidates = listed + sorted(MODEL_ALIASES) if known is None else listed
    close = difflib.get_close_matches(name.partition(".")[0], candidates, n=5, cutoff=0.5)
    hint = f" Closest registered names: {', '.join(close)}." if close else ""
    return UnknownModelError(f"Unknown model {name!r}.{hint} {lister} lists all {len(listed)} names.")


if Registry is not None:

    class _ModelRegistry(Registry):
        """mmengine's registry, with our message for a name it does not hold."""

        def get(self, key):
            found = super().get(key)
            if found is None and isinstance(key, str):
                scope, name = self.split_scope_key(key)
                if scope in (None, self.scope):
                    raise unknown_name_error(name)
            return found

        def __contains__(self, key) -> bool:
            try:
                return super().get(key) is not None
            except KeyError:
                return False

    MODELS = _ModelRegistry(
        "model",
        parent=MMENGINE_MODELS,
        scope="densebackbones",
        locations=["densebackbones.models", "densebackbones.heads", "densebackbones.mm"],
    )
else:  # pragma: no cover
    MODELS = None


def register_model(
    fn: Callable[..., nn.Module] | None = None,
    *,
    task: str = "classification",
    model_cls: type[nn.Module] | None = None,
):
    """Register a model factory under its ``__name__`` with densebackbones, mmengine and torchvision
    (``torchvision.models.get_model``), and (backbones) timm.

    Used bare (``@register_model``: a classification backbone) or with arguments
    (``@register_model(task='segmentation', model_cls=FCDenseNet)``). ``model_cls``: the class the factory builds,
    whose constructor arguments a config may set (:func:`model_arg_names`)."""
    if fn is None:
        return functools.partial(register_model, task=task, model_cls=model_cls)
    if task not in TASKS:
        raise ValueError(f"task {task!r} is not one of {TASKS}")
    fn = _with_placement(fn)
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(
            f"model {name!r} is registered twice ({fn.__module__} and {_model_entrypoints[name].__module__})"
        )
    _model_entrypoints[name] = fn
    _model_tasks[name] = task
    if model_cls is not None:
        _model_classes[name] = model_cls
    if task != "classification":
        pass  # timm's registry holds classifiers; its create_model would not know what to do with the rest
    elif timm.models.is_model(name) and not getattr(timm.models.model_entrypoint(name), "__module__", "").startswith(
        "densebackbones"
    ):
        # Registering would replace timm's own model process-wide; keep timm's.
        _skipped_in_timm.add(name)
        _logger.info("timm already has a model named %r; it stays timm's (use densebackbones.create_model)", name)
    else:
        timm.models.register_model(fn)
    if MODELS is not None:
        MODELS.register_module(name=name, module=fn)
    if name not in torchvision_models_api.BUILTIN_MODELS:  # torchvision's get_model(name, weights=None, ...)
        torchvision_models_api.register_model(name)(_torchvision_builder(name))
    return fn


def _torchvision_builder(arch: str) -> Callable[..., nn.Module]:
    """A builder with torchvision's signature (``torchvision.models.get_model(name, weights=..., **kwargs)``, as its
    reference scripts call it): ``weights`` None or False builds the model without weights, True or ``'DEFAULT'``
    loads its default pretrained config, a pretrained tag (``'tv_in1k'``) that config, a file path that file;
    ``progress`` is accepted (timm's hub shows its own)."""

    def build(*, weights: bool | str | None = None, progress: bool = True, **kwargs) -> nn.Module:
        if weights is None or weights is False:
            return create_model(arch, **kwargs)
        if weights is True or weights == "DEFAULT":
            return create_model(arch, pretrained=True, **kwargs)
        if isinstance(weights, (str, os.PathLike)) and os.path.isfile(weights):
            return create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(weights)), **kwargs)
        if isinstance(weights, (str, os.PathLike)) and (
            os.sep in str(weights) or str(weights).endswith((".pth", ".pt", ".bin", ".safetensors"))
        ):
            raise FileNotFoundError(f"weights={str(weights)!r} for {arch!r}: no such file")
        if isinstance(weights, str):
            tags = _pretrained_tags(arch)
            if weights not in tags:
                raise ValueError(
                    f"weights={weights!r} for {arch!r} is neither a file nor a pretrained tag of it "
                    f"({', '.join(tags) or 'none registered'}); pass None, True/'DEFAULT', a tag or a weights file"
                )
            return create_model(f"{arch}.{weights}", pretrained=True, **kwargs)
        raise TypeError(
            f"weights={weights!r} for {arch!r}: pass None, True/'DEFAULT', a pretrained tag "
            f"({', '.join(_pretrained_tags(arch)) or 'none registered'}) or a weights file"
        )

    build.__name__ = build.__qualname__ = arch
    build.__module__ = __name__
    return build


def _pretrained_tags(arch: str) -> list[str]:
    return [name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*")]


def _with_placement(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``fn`` taking timm's factory arguments ``device`` and ``dtype`` (timm >= 1.0.30 passes them to every model
    factory): parameters and buffers are created on ``device`` (under ``torch.device(device)``, as timm does, so a
    large model is never first built in CPU memory), then cast to the floating-point ``dtype``."""

    @functools.wraps(fn)
    def factory(*args, device=None, dtype=None, **kwargs) -> nn.Module:
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype={dtype!r}: models take a floating-point torch.dtype such as torch.bfloat16")
        with torch.device(device) if device is not None else contextlib.nullcontext():
            try:
                model = fn(*args, **kwargs)
            except TypeError as err:  # a misspelt argument: name the closest ones instead of Python's bare message
                unknown = _UNEXPECTED_KEYWORD.search(str(err))
                if unknown is None or unknown.group(1) not in kwargs or fn.__name__ not in _model_classes:
                    raise
                raise unknown_argument_error(fn.__name__, unknown.group(1)) from err
        return model.to(dtype=dtype) if dtype is not None else model

    return factory


_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '(\w+)'")


def unknown_argument_error(name: str, argument: str) -> TypeError:
    """A ``TypeError`` for a keyword model ``name`` does not take, naming the closest ones it does."""
    accepted = model_arg_names(name)
    close = difflib.get_close_matches(argument, accepted, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return TypeError(
        f"{name} takes no argument {argument!r}; {hint}its arguments: {', '.join(accepted)} "
        f"(densebackbones.model_arg_names({name!r}))"
    )


def _resolve_name(name: str) -> tuple[str, str]:
    """Split ``arch.tag``, map aliases, and fail with the closest names for an unknown model."""
    if not isinstance(name, str) or not name:
        raise unknown_name_error(str(name))
    arch, _, tag = name.partition(".")
    arch = MODEL_ALIASES.get(arch, arch)
    if arch not in _model_entrypoints:
        raise unknown_name_error(name)
    return arch, tag


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


def model_task(name: str) -> str:
    """The task ``name`` was registered for: ``'classification'``, ``'segmentation'`` or ``'detection'``."""
    return _model_tasks[_resolve_name(name)[0]]


def model_class(name: str) -> type[nn.Module] | None:
    """The class ``create_model(name)`` builds, when its factory was registered with ``model_cls`` (tasks read
    class-level settings from it, such as a detector's default boxes per data set)."""
    return _model_classes.get(_resolve_name(name)[0])


def model_arg_names(name: str) -> list[str]:
    """The keyword arguments ``create_model(name, ...)`` accepts: the model class's constructor arguments and
    timm's builder arguments (what a config's ``model`` section may set besides ``type``)."""
    arch = _resolve_name(name)[0]
    cls = _model_classes.get(arch)
    own = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")] if cls else []
    return [*own, *BUILDER_ARGS]


def list_models(
    filter: str | list[str] = "",  # noqa: A002 (timm's name)
    pretrained: bool = False,
    task: str | None = None,
) -> list[str]:
    """Registered architecture names, sorted, optionally filtered by wildcard pattern(s) and task.

    Args:
        filter: fnmatch pattern or list of patterns, e.g. ``'*cifar'``.
        pretrained: only architectures with at least one pretrained weight config.
        task: only models of this task (``'classification'``, ``'segmentation'``, ``'detection'``).
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {TASKS} (or None for all)")
    names = sorted(n for n in _model_entrypoints if task is None or _model_tasks[n] == task)
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
    """Create any registered model by name, timm-style: a backbone, a segmentation model or a detector.

    Args:
        model_name: architecture name (``list_models()``), an alias (``densenet121``), ``arch.tag`` to pick a
            pretrained config (``densenet_bc121_k32.tv_in1k``), or a Hub folder, ``hf-hub:ORG/NAME`` or
            ``local-dir:PATH`` (:mod:`densebackbones.hub`; ``pretrained=True`` loads its weights).
        pretrained: load the weights named by the pretrained config; a local file is given with
            ``pretrained_cfg_overlay=dict(file='weights.safetensors')``.
        features_only: (backbones) return a feature extractor whose forward returns the maps in ``feature_info``.
        out_indices: (backbones) which feature levels to return (needs ``features_only=True``).
        **kwargs: model constructor arguments (``num_classes``, ``in_chans``, ``drop_rate``, ``memory_mode``...;
            :func:`model_arg_names`) and timm builder arguments (``pretrained_cfg``, ``pretrained_cfg_overlay``).
    """
    if model_name.startswith(HUB_PREFIXES):  # a Hub folder: its config.json names the architecture and arguments
        spec = hub_model(model_name)
        if not is_model(spec.architecture):
            raise UnknownModelError(
                f"{model_name}: its config.json names {spec.architecture!r}, which is not a densebackbones model "
                f"(timm.create_model({model_name!r}, pretrained=True) loads timm's own)"
            )
        kwargs = {**spec.model_args, **kwargs}
        overlay = {**spec.preprocessing, **(kwargs.get("pretrained_cfg_overlay") or {})}  # the weights' own inputs
        if pretrained:  # its weights load as a file does: completely, shape-checked
            overlay["file"] = str(spec.weights)
        kwargs["pretrained_cfg_overlay"] = overlay
        return create_model(spec.architecture, pretrained, features_only, out_indices, **kwargs)
    arch, tag = _resolve_name(model_name)
    if out_indices is not None and not features_only and "out_indices" in model_arg_names(arch):
        kwargs["out_indices"], out_indices = out_indices, None  # the model's own argument (DenseSegmentor's levels)
    if (features_only or out_indices is not None) and _model_tasks[arch] != "classification":
        raise ValueError(
            f"features_only/out_indices apply to backbones; {arch!r} is a {_model_tasks[arch]} model: create its "
            f"backbone by name with features_only=True (the backbone its builder names in backbone=/encoder=)"
        )
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
    try:
        return _model_entrypoints[arch](pretrained=pretrained, **kwargs)
    except urllib.error.URLError as err:  # no network (or the host refused): name the weights and the offline way
        if not pretrained:
            raise
        raise OSError(
            f"could not download the pretrained weights of {model_name!r} ({getattr(err, 'reason', err)}); without a "
            f"network, fetch them elsewhere and pass pretrained_cfg_overlay=dict(file=PATH) (torchvision's "
            f"get_model: weights=PATH)"
        ) from err
