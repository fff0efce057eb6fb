"""What every model family shares: feature-index checks, complete checkpoint loading, and the builder of the
segmentation and detection models (backbones are built by timm's ``build_model_with_cfg``)."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import adapt_input_conv, load_state_dict
from timm.models._features import FeatureGetterNet
from torch import Tensor, nn

from ..registry import list_models, model_class
from . import checks
from .caffe import caffe_state_dict
from .lasagne import lasagne_state_dict
from .published import OFFICIAL, no_weights_message
from .torch7 import t7_state_dict

__all__ = [
    "InputChannelsMismatch",
    "InputSizeCheck",
    "input_is_refused",
    "record_min_input_size",
    "build_task_model",
    "check_weights_overlay",
    "check_out_indices",
    "check_state_dict_fits",
    "load_checkpoint_into",
    "task_cfg",
]


class InputChannelsMismatch(ValueError):
    """A checkpoint whose first convolution takes another number of input channels than the model (raised when
    adapting it is turned off); ``checkpoint_in_chans`` says how many it takes."""

    def __init__(self, message: str, checkpoint_in_chans: int) -> None:
        super().__init__(message)
        self.checkpoint_in_chans = checkpoint_in_chans


_logger = logging.getLogger(__name__)


def _levels(feature_info: Sequence[dict[str, Any]]) -> str:
    return "; ".join(
        f"{i}: {info['module']} ({info['num_chs']} ch, stride {info['reduction']})"
        for i, info in enumerate(feature_info)
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
        raise ValueError(
            f"out_indices {tuple(indices)} must be increasing and unique (levels: {_levels(feature_info)})"
        )
    return absolute


def _fmt_keys(keys: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_state_dict_fits(
    state_dict: dict[str, Tensor],
    model: nn.Module,
    find_matching_archs: Callable[[dict[str, Tensor]], tuple[str, list[str]]] | None = None,
) -> None:
    """Raise a ``ValueError`` that says exactly why ``state_dict`` does not fit ``model`` (and what would)."""
    model_sd = model.state_dict()
    missing = [k for k in model_sd if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_sd]
    mismatched = [k for k, v in model_sd.items() if k in state_dict and state_dict[k].shape != v.shape]
    if not (missing or unexpected or mismatched):
        return
    lines = ["the checkpoint does not fit this model's architecture."]
    if find_matching_archs is not None:  # first what would fit, then the evidence
        desc, matches = find_matching_archs(state_dict)
        lines.append(f"The checkpoint looks like: {desc}.")
        lines.append(
            f"Registered models with that architecture: {', '.join(matches)}."
            if matches
            else "No registered model of this family has that architecture; build the model with those arguments."
        )
    if "classifier.weight" in state_dict and "classifier.weight" not in model_sd:  # a backbone's into a task model
        lines.append(
            "It looks like a classification backbone's checkpoint: load it into the model's backbone with "
            "backbone_kwargs=dict(pretrained=True, pretrained_cfg_overlay=dict(file=...)) (FC-DenseNet decoders: "
            "encoder_kwargs)."
        )
    if mismatched:
        shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(model_sd[k].shape)}" for k in mismatched]
        lines.append(f"Shape mismatches ({len(mismatched)}): {_fmt_keys(shapes, 4)}")
    if missing:
        lines.append(f"Missing in checkpoint ({len(missing)}): {_fmt_keys(missing)}")
    if unexpected:
        lines.append(f"Not in model ({len(unexpected)}): {_fmt_keys(unexpected)}")
    raise ValueError(" ".join(lines))


_TRAINED_HEAD_REQUIRED: contextvars.ContextVar[bool] = contextvars.ContextVar("trained_head_required", default=False)


@contextlib.contextmanager
def trained_head_required() -> Iterator[None]:
    """Inside, weights that are loaded must bring a classifier that fits the model (:func:`load_checkpoint_into`
    raises instead of keeping the model's fresh one): evaluation and prediction tools never report numbers from an
    untrained head. A fresh head is for fine-tuning only."""
    token = _TRAINED_HEAD_REQUIRED.set(True)
    try:
        yield
    finally:
        _TRAINED_HEAD_REQUIRED.reset(token)


def _adapted_input_conv(path: Path, in_chans: int, weight: Tensor) -> Tensor:
    """timm's ``adapt_input_conv`` of a first convolution trained on ``weight.shape[1]`` channels (3: every timm
    version; others need timm's ``base_chans``, from timm 1.0.31)."""
    if weight.shape[1] == 3:
        return adapt_input_conv(in_chans, weight)
    if "base_chans" not in inspect.signature(adapt_input_conv).parameters:
        raise ValueError(
            f"{path} takes {weight.shape[1]}-channel input: adapting it to {in_chans} channels needs timm >= 1.0.31 "
            f"(pip install -U timm), or build the model with in_chans={weight.shape[1]}"
        )
    return adapt_input_conv(in_chans, weight, base_chans=weight.shape[1])


def _is_safetensors(path: Path) -> bool:
    """Whether the file is a safetensors file whatever its name (an 8-byte header length, then a JSON header)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size


def _torch_state_dict(path: Path) -> dict[str, Tensor]:
    """A torch or safetensors file's state_dict (timm's reader, ``weights_only=True``; a safetensors file under
    another name too), or one line saying why not."""
    try:
        if path.suffix != ".safetensors" and _is_safetensors(path):
            return safetensors.torch.load_file(str(path))
        return load_state_dict(str(path), weights_only=True)
    except Exception as err:  # truncated, garbage, or holding objects weights_only refuses
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        with open(path, "rb") as handle:
            magic = handle.read(4)
        serialized = magic[:2] in (b"PK", b"\x80\x02")  # torch's zip format or its legacy pickle (protocol 2)
        if serialized and ("weights_only" in str(err) or "Weights only load failed" in str(err)):
            reason = (
                "it holds Python objects, which torch.load(weights_only=True) refuses to unpickle; if you trust "
                "the file, load it with weights_only=False and save its state_dict"
            )
        elif path.suffix in (".prototxt", ".pbtxt"):
            reason = "a Caffe prototxt describes a network; its weights are the .caffemodel, which loads"
        elif not serialized and path.suffix != ".safetensors":
            reason = "it is neither a torch file (zip or pickle) nor a safetensors file"
        raise ValueError(
            f"{path} is not a readable weights file ({type(err).__name__}: {reason}); pass a torch or safetensors "
            f"checkpoint of the model"
        ) from err


_CLASS_LAYER_ENTRIES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def load_checkpoint_into(
    model: nn.Module,
    checkpoint_path: str | Path,
    filter_fn: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    find_matching_archs: Callable[[dict[str, Tensor]], tuple[str, list[str]]] | None = None,
    adapt_in_chans: bool = True,
) -> None:
    """Load a safetensors or torch checkpoint into ``model`` completely, or fail saying why.

    This is the models' timm ``custom_load`` hook (``pretrained_cfg_overlay=dict(file=...)`` and URLs end here).
    Torch files are read with ``weights_only=True``; timm's reader unwraps training checkpoints (``state_dict``,
    ``model``) and strips DDP's ``module.`` prefix. Keys are remapped by the family's ``filter_fn``, if any. The first
    conv is adapted to the model's input channels as timm does (``adapt_input_conv``), unless ``adapt_in_chans`` is
    False (an export must be what the checkpoint is): then :class:`InputChannelsMismatch`. The classifier is kept when
    its shape fits the model and replaced by the model's fresh one otherwise, with a warning that says how to keep
    it -- decided by the checkpoint's shapes, not by the pretrained config's ``num_classes``. Anything else that does
    not fit raises (see :func:`check_state_dict_fits`); nothing loads partially.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix in (".t7", ".caffemodel"):  # official releases without our key names: layers in order
        candidates = [name for name in list_models() if model_class(name) is type(model)]  # named if it misfits
        read = t7_state_dict if path.suffix == ".t7" else caffe_state_dict
        state_dict = read(path, model, candidates=candidates)
        filter_fn = None
    elif path.suffix == ".npz":  # FC-DenseNet's official Lasagne parameters, in computing order
        classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        state_dict, filter_fn = lasagne_state_dict(path, model, classifier=classifier), None
    else:
        state_dict = _torch_state_dict(path)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    model_sd = model.state_dict()
    cfg = getattr(model, "pretrained_cfg", None) or {}

    first_conv = f"{cfg.get('first_conv')}.weight"
    if first_conv in state_dict and first_conv in model_sd:
        theirs, ours = state_dict[first_conv], model_sd[first_conv]
        if theirs.ndim == ours.ndim == 4 and theirs.shape != ours.shape and theirs.shape[2:] == ours.shape[2:]:
            if theirs.shape[0] == ours.shape[0]:
                if not adapt_in_chans:
                    raise InputChannelsMismatch(
                        f"{path} takes {theirs.shape[1]}-channel input and the model {ours.shape[1]}-channel; build "
                        f"the model with in_chans={theirs.shape[1]}",
                        theirs.shape[1],
                    )
                state_dict[first_conv] = _adapted_input_conv(path, ours.shape[1], theirs)
                _logger.info("adapted %s from %d to %d input channels", first_conv, theirs.shape[1], ours.shape[1])

    # The classifier: a module (``classifier``), or a container of per-level class layers (detectors' ``head.conf``):
    # every weight, bias and batch-norm statistic below that name (DSOD's class layers end in a batch norm), in the
    # model and in the checkpoint.
    prefix = f"{cfg.get('classifier')}."
    in_model = [k for k in model_sd if k.startswith(prefix) and k.rsplit(".", 1)[-1] in _CLASS_LAYER_ENTRIES]
    in_checkpoint = [k for k in state_dict if k.startswith(prefix) and k.rsplit(".", 1)[-1] in _CLASS_LAYER_ENTRIES]
    fits = sorted(in_checkpoint) == sorted(in_model) and all(state_dict[k].shape == model_sd[k].shape for k in in_model)
    weights = [k for k in in_model if k.endswith(".weight") and k in state_dict]
    other_width = any(
        state_dict[k].shape[1:] != model_sd[k].shape[1:] for k in weights
    )  # a classifier over other features: the checkpoint of another network, not of other classes
    if not fits and not other_width:
        # classes from the first class layer's rows (a detector's hold boxes x classes rows)
        first = weights[0] if weights else None
        checkpoint_classes = (
            state_dict[first].shape[0] * model.num_classes // model_sd[first].shape[0]
            if first is not None and model_sd[first].shape[0]
            else (state_dict[in_checkpoint[0]].shape[0] if in_checkpoint else 0)
        )
        if _TRAINED_HEAD_REQUIRED.get():
            theirs = f"has a {checkpoint_classes}-class classifier" if in_checkpoint else "has no classifier"
            raise ValueError(
                f"{path} {theirs} and the model num_classes={model.num_classes}: evaluating or predicting would use a "
                f"new, untrained classifier; build the model with the checkpoint's classes "
                f"(--cfg-options model.num_classes={checkpoint_classes or '...'}) or pass the checkpoint trained on "
                f"these classes"
            )
        for key in in_checkpoint:
            del state_dict[key]
        state_dict.update({k: model_sd[k] for k in in_model})  # the model's freshly initialised classifier
        if in_checkpoint and in_model:
            _logger.warning(
                "The checkpoint's classifier has %d classes and the model num_classes=%d: the model keeps a new "
                "classifier, as fine-tuning on other classes wants (to keep the trained one instead, create the model "
                "with num_classes=%d).",
                checkpoint_classes,
                model.num_classes,
                checkpoint_classes,
            )
    try:
        check_state_dict_fits(state_dict, model, find_matching_archs)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    not_float = [
        f"{key} ({value.dtype})".replace("torch.", "")
        for key, value in state_dict.items()
        if key in model_sd and model_sd[key].is_floating_point() and not value.is_floating_point()
    ]
    if not_float:  # load_state_dict would cast them silently (an int8/int32 file is quantized or not weights at all)
        shown = ", ".join(not_float[:3]) + (f" and {len(not_float) - 3} more" if len(not_float) > 3 else "")
        raise ValueError(
            f"{path} holds integer tensors where the model has floating-point weights: {shown}; pass float weights "
            f"(a quantized export does not load into the float model)"
        )
    model.load_state_dict(state_dict, strict=True)


def check_weights_overlay(overlay: dict[str, Any] | None, pretrained: bool) -> None:
    """A weights file named in ``pretrained_cfg_overlay`` without ``pretrained=True`` would not be loaded: say so
    rather than build an untrained model (every family's builder calls this)."""
    if (overlay or {}).get("file") and not pretrained:
        raise ValueError(
            f"pretrained_cfg_overlay names the file {overlay['file']!r} but pretrained=False, so it would not be "
            "loaded; pass pretrained=True"
        )


def task_cfg(
    num_classes: int,
    input_size: tuple[int, int, int],
    classifier: str,
    paper_ids: str,
    mean: tuple[float, ...] = IMAGENET_DEFAULT_MEAN,
    std: tuple[float, ...] = IMAGENET_DEFAULT_STD,
    first_conv: str | None = None,
) -> dict[str, Any]:
    """timm-style default config of a segmentation or detection model: no weights, whole images (``crop_pct`` 1, as
    the task's data pipeline resizes them, not a classifier's centre crop), bilinear resizing, and where checkpoint
    loading finds the class layers (``classifier``: replaced when a checkpoint has other classes)."""
    return {
        "url": "",
        "num_classes": num_classes,
        "input_size": input_size,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "classifier": classifier,
        "first_conv": first_conv,
        "paper_ids": paper_ids,
    }


def build_task_model(
    model_cls: Callable[..., nn.Module],
    variant: str,
    pretrained: bool,
    default_cfgs: dict[str, Any],
    *,
    pretrained_cfg: str | dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered segmentation or detection model the way timm builds a backbone: ``model.pretrained_cfg``
    is the variant's default config (or its ``tag``: ``create_model('fc_densenet103.tag')``) updated by
    ``pretrained_cfg_overlay``, and ``pretrained=True`` loads the weights it names -- a local ``file`` -- completely
    (:func:`load_checkpoint_into`: a classifier of another size is replaced, with a warning).

    Args:
        model_cls: the model class, called with ``kwargs``.
        variant: the registered name.
        default_cfgs: timm's ``generate_default_cfgs`` table of the family.
    """
    check_weights_overlay(pretrained_cfg_overlay, pretrained)
    entry = default_cfgs[variant]
    tag = ""
    if isinstance(pretrained_cfg, dict):
        cfg = dict(pretrained_cfg)
    else:
        tag = pretrained_cfg or entry.tags[0]  # the default (first) tag; '' for a config without one
        if tag not in entry.cfgs:
            raise ValueError(f"{variant} has no pretrained config {tag!r}; it has {sorted(entry.cfgs)}")
        cfg = entry.cfgs[tag].to_dict()
    cfg.update(pretrained_cfg_overlay or {})
    release = OFFICIAL.get(f"{variant}.{tag}") if tag else None
    if release is not None and release.model_args:  # the file's classes and boxes, unless the caller sets them
        kwargs = {**release.model_args, **kwargs}
    cfg["architecture"] = variant
    if tag:
        cfg["tag"] = tag
    model = model_cls(**kwargs)
    model.pretrained_cfg = model.default_cfg = cfg
    record_min_input_size(model)
    if pretrained:
        source = cfg.get("file") or cfg.get("url")
        if not source:
            raise ValueError(no_weights_message(f"{variant}.{tag}" if tag else variant))
        if not cfg.get("file"):
            raise ValueError(f"{variant}: only local files load here; download {source} and pass it as file=...")
        loader = getattr(model, "load_pretrained", None)  # a model's own key mapping (DenseASPP's official names)
        loader(cfg["file"]) if loader is not None else load_checkpoint_into(model, cfg["file"])
    return model


# ------------------------------------------------------------------------------------------------- input geometry
@torch.jit.unused
def _is_symbolic(x: Tensor) -> bool:
    # checks._is_symbolic's question in a form TorchScript compiles (input_is_refused is scripted with the models)
    return isinstance(x, torch.fx.Proxy)


def input_is_refused(x: Tensor, min_size: int, in_chans: int = 0) -> bool:
    """Whether ``x`` is not an image batch a model with this minimum side (and ``in_chans`` channels, if > 0) takes.

    The one shared geometry test of every model (:class:`InputSizeCheck`). It reads only the input's shape, is
    TorchScript-compilable, and says False under ``torch.fx`` symbolic tracing (a traced graph keeps no Python
    check; shape proxies cannot steer control flow)."""
    if not torch.jit.is_scripting():
        if _is_symbolic(x):
            return False
        if not isinstance(x, Tensor):  # a numpy array...: named with the conversion
            return True
    if not x.is_floating_point():  # uint8 images: named with the conversion (checks.check_input_dtype)
        return True
    if x.dim() != 4:
        return True
    if in_chans > 0 and x.shape[1] != in_chans:
        return True
    return x.shape[-2] < min_size or x.shape[-1] < min_size


class InputSizeCheck:
    """Mixin of every registered model: ``min_input_size`` (the smallest height and width it takes, in pixels,
    computed by the model from its own layers) is checked by :meth:`_check_input` before any layer runs, and a
    refused input gets one ``ValueError`` line naming the sizes the model takes (``input_size_reason`` says why).
    The registered builders copy the minimum into ``pretrained_cfg['min_input_size']`` (timm's key)."""

    # min_input_size and in_chans (ints) are set by each model; no class annotations here, which TorchScript would
    # try to resolve on every model that mixes this in.
    input_size_reason = ""

    # The two methods are unannotated on purpose: TorchScript compiles them in every model's class and does not resolve
    # this module's postponed annotations there (an unannotated argument is a Tensor to it).
    def _check_input(self, x):
        if input_is_refused(x, self.min_input_size, self.in_chans):
            self._refuse_input(x)
        if not torch.jit.is_scripting():
            self._check_input_dtype(x)

    @torch.jit.unused
    def _check_input_dtype(self, x):
        """A float batch of another precision than the weights (a float64 batch into a float32 model), outside
        autocast, is named with both conversions (torch's own message names the types the other way round)."""
        if checks._is_symbolic(x) or not isinstance(x, Tensor):
            return
        device = x.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            return
        weight = next((p for p in self.parameters() if p.is_floating_point()), None)
        if weight is not None and x.dtype != weight.dtype:
            name = (getattr(self, "pretrained_cfg", None) or {}).get("architecture") or type(self).__name__
            raise TypeError(
                f"{name} has {weight.dtype} weights but the input is {x.dtype}: convert the input "
                f"(x.to({weight.dtype})) or the model (model.to({x.dtype})), or run it under torch.autocast"
            )

    @torch.jit.unused
    def _refuse_input(self, x):
        checks.check_input_dtype(x, getattr(self, "pretrained_cfg", None))
        name = (getattr(self, "pretrained_cfg", None) or {}).get("architecture") or type(self).__name__
        if x.dim() != 4:
            raise ValueError(f"{name} expects an image batch (N, C, H, W), got a tensor of shape {tuple(x.shape)}")
        if self.in_chans > 0 and x.shape[1] != self.in_chans:
            if x.shape[-1] == self.in_chans:  # an (N, H, W, C) batch, as images come from PIL, numpy or OpenCV
                raise ValueError(
                    f"{name} expects (N, C, H, W) batches with C={self.in_chans}; this one, of shape "
                    f"{tuple(x.shape)}, looks channels-last (N, H, W, C): pass x.permute(0, 3, 1, 2)"
                )
            raise ValueError(
                f"{name} expects {self.in_chans} input channels, got {x.shape[1]} (create it with "
                f"in_chans={x.shape[1]})"
            )
        size, reason = self.min_input_size, f" ({self.input_size_reason})" if self.input_size_reason else ""
        raise ValueError(f"{name} takes inputs of at least {size}x{size} px{reason}; got {x.shape[-2]}x{x.shape[-1]}")


def record_min_input_size(model: nn.Module) -> nn.Module:
    """Write the model's ``min_input_size`` into its ``pretrained_cfg`` as timm's ``(C, H, W)`` (also on timm's
    ``features_only`` wrapper, which keeps the model as ``.model``); every registered builder calls this."""
    inner = getattr(model, "model", model) if not hasattr(model, "min_input_size") else model
    size = getattr(inner, "min_input_size", None)
    if size is None:
        return model
    for module in (model, inner):
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict):
            cfg["min_input_size"] = (getattr(inner, "in_chans", 3), size, size)
    return model


class DenseFeatureGetterNet(FeatureGetterNet):
    """timm's ``features_only`` wrapper (``forward_intermediates``) for every dense family, with timm's feature
    extractor switches forwarded to the model: ``set_grad_checkpointing`` (DenseNet's ``memory_mode='efficient'``,
    MSDNet's block recomputation) and ``grad_checkpointing``, which timm's ``FeatureGetterNet`` lacks.

    It scripts for the families whose layers form one ``features`` sequence (every DenseNet-based one): scripted, the
    wrapper runs that sequence and keeps the outputs of the requested levels, which is what ``forward_intermediates``
    (eager Python: index checks, name matching) returns."""

    __jit_unused_properties__ = ["grad_checkpointing"]

    def __init__(self, model: nn.Module, *args: Any, **kwargs: Any) -> None:
        super().__init__(model, *args, **kwargs)
        features = getattr(model, "features", None)
        taps = set(self.feature_info.module_name())  # of the requested levels, e.g. 'features.denseblock2'
        children = list(features.named_children()) if isinstance(features, nn.Sequential) else []
        # Per module of model.features (after pruning): whether its output is a requested level, and whether a map
        # inside it is (its ``inner_tap``, returned by its ``forward_with_inner_tap``: PeleeNet's stem block).
        self.is_tap = [f"features.{name}" in taps for name, _ in children]
        self.is_inner_tap = [f"features.{name}.{getattr(m, 'inner_tap', '')}" in taps for name, m in children]

    def forward(self, x: Tensor) -> list[Tensor]:
        if torch.jit.is_scripting():
            return self._scripted_forward(x)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x: Tensor) -> list[Tensor]:
        return super().forward(x)

    def _scripted_forward(self, x: Tensor) -> list[Tensor]:
        self.model._check_input(x)
        maps: list[Tensor] = []
        i = 0
        for module in self.model.features:
            if hasattr(module, "forward_with_inner_tap"):  # resolved per module when scripted
                x, inner = module.forward_with_inner_tap(x)
                if self.is_inner_tap[i]:
                    maps.append(inner)
            else:
                x = module(x)
            if self.is_tap[i]:
                maps.append(x)
            i += 1
        return maps

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    @property
    def grad_checkpointing(self) -> bool:
        return bool(self.model.grad_checkpointing)
