"""timm's own model test suite on every registered backbone (docs/timm_suite.md).

``tests/test_models.py`` of the installed timm's source release (``make install`` extracts it into
``.cache/timm-tests/timm-<version>/`` with ``tools/fetch_timm_tests.py``; nothing is downloaded here) is imported
with ``timm.list_models`` and ``timm.list_pretrained`` replaced, so that the model lists its parametrizations are
built from name only our backbones. Only *which models* changes: its test functions, filters, input sizes, limits and
assertions are timm's. Specifically:

* A list of timm's is ``timm.list_models(...)`` called with timm's arguments (filters, exclude filters,
  ``pretrained``, ``name_matches_cfg``, ``include_tags``), restricted to ``densebackbones.list_models(
  task="classification")``. Two of its arguments name timm's own code rather than a model property, and are not
  applied to ours: ``module=FEAT_INTER_FILTERS`` (timm's model *files* that have ``forward_intermediates``; every
  backbone of ours has it, asserted below), and the pattern ``'densenet*'`` of ``EXCLUDE_JIT_FILTERS``, which is
  there for timm's own densenet.py (not scriptable) and would drop our ``densenet_*`` models from the TorchScript
  tests by the accident of their names.
* Collected are the test functions whose ``model_name`` parametrization is such a list and holds at least one of
  ours; the others test timm's own models by hard-coded name (``resnet18``, ``convnext_atto``, ...) or match none of
  ours (``list_pretrained('test_*')``, ``list_models('efficientnet_[hx]_*')``, ``NON_STD_FILTERS``).
* The tests over ``list_models(pretrained=True)`` download pretrained weights, and are skipped (the only skips).
* timm's module sets TorchScript's executor flags at import; ``conftest.py`` sets them for timm's tests only and
  restores them after each (other tests in the same worker keep the defaults).

Models too slow for CI are marked ``slow`` per (test, model) in ``conftest.py`` (``SLOW``).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from unittest import mock

import pytest
import timm
import torch

import densebackbones as db
from densebackbones.models.published import OFFICIAL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TIMM_VERSION = importlib.metadata.version("timm")
TIMM_TESTS = ROOT / ".cache" / "timm-tests" / f"timm-{TIMM_VERSION}" / "test_models.py"

BACKBONES = db.list_models(task="classification")
# Patterns of timm's exclude lists that name timm's own models and are not applied to ours (see the docstring).
TIMM_ONLY_PATTERNS = ("densenet*",)
# Patterns of timm's that did drop one of ours: (pattern, [names]); test_no_backbone_dropped reports them.
DROPPED: list[tuple[str, list[str]]] = []

_real_list_models = timm.list_models
_real_list_pretrained = timm.list_pretrained
_lists: list[tuple[list[str], bool]] = []  # every list handed to timm's module, and whether it was pretrained-only


def _ours(names: list[str], pretrained: bool) -> list[str]:
    ours = [name for name in names if name.partition(".")[0] in BACKBONES]
    _lists.append((ours, pretrained))
    return ours


def _patterns(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value or ())


def list_models(
    filter="",  # noqa: A002 (timm's name)
    module="",
    pretrained=False,
    exclude_filters="",
    name_matches_cfg=False,
    include_tags=None,
):
    """timm's ``list_models`` over our backbones; ``module`` and TIMM_ONLY_PATTERNS are not applied."""
    excludes = _patterns(exclude_filters)
    for pattern in excludes:
        hit = [name for name in BACKBONES if fnmatch.fnmatch(name, pattern)]
        if hit and pattern not in TIMM_ONLY_PATTERNS:
            DROPPED.append((pattern, hit))
    names = _real_list_models(
        filter,
        pretrained=pretrained,
        exclude_filters=[p for p in excludes if p not in TIMM_ONLY_PATTERNS],
        name_matches_cfg=name_matches_cfg,
        include_tags=include_tags,
    )
    return _ours(names, pretrained)


def list_pretrained(filter="", exclude_filters=""):  # noqa: A002
    return _ours(_real_list_pretrained(filter, exclude_filters), True)


def _load_timm_tests():
    """timm's test module, imported with the two listers replaced, and the JIT flags it set (then restored)."""
    prev_executor = torch._C._jit_set_profiling_executor(True)
    prev_mode = torch._C._jit_set_profiling_mode(True)
    torch._C._jit_set_profiling_executor(prev_executor)
    torch._C._jit_set_profiling_mode(prev_mode)
    spec = importlib.util.spec_from_file_location("timm_test_models", TIMM_TESTS)
    module = importlib.util.module_from_spec(spec)
    with (
        mock.patch.object(timm, "list_models", list_models),
        mock.patch.object(timm, "list_pretrained", list_pretrained),
    ):
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    timm_flags = (
        torch._C._jit_set_profiling_executor(prev_executor),
        torch._C._jit_set_profiling_mode(prev_mode),
    )
    return module, timm_flags


def _model_list(function) -> tuple[list[str], bool] | None:
    """The list (and whether pretrained-only) that ``function``'s ``model_name`` parametrization came from."""
    for mark in getattr(function, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == "model_name":
            for listed, pretrained in _lists:
                if mark.args[1] is listed:
                    return listed, pretrained
    return None


COLLECTED: dict[str, list[str]] = {}  # timm test function -> the models it iterates
LEFT_OUT: dict[str, str] = {}  # timm test function -> why it is not collected
SKIPPED_DOWNLOADS: list[str] = []

if TIMM_TESTS.is_file():
    timm_tests, TIMM_JIT_FLAGS = _load_timm_tests()
    cfg_device = timm_tests.cfg_device  # the one fixture of timm's that its model tests use
    for _name, _function in vars(timm_tests).items():
        if not _name.startswith("test_") or not callable(_function):
            continue
        _found = _model_list(_function)
        if _found is None:
            LEFT_OUT[_name] = "not parametrized over list_models()/list_pretrained() (timm's own models by name)"
            continue
        if not _found[0]:
            LEFT_OUT[_name] = "its list_models() filters match none of our backbones"
            continue
        if _found[1]:
            _function = pytest.mark.skip(reason="downloads pretrained weights (timm's list_models(pretrained=True))")(
                _function
            )
            SKIPPED_DOWNLOADS.append(_name)
        COLLECTED[_name] = [name.partition(".")[0] for name in _found[0]]
        globals()[_name] = _function
else:
    TIMM_JIT_FLAGS = None


def test_timm_tests_installed():
    """The runner's precondition: fails (never skips) where the install step has not fetched timm's tests."""
    if not TIMM_TESTS.is_file():
        pytest.fail(
            f"timm's tests/test_models.py for the installed timm {TIMM_VERSION} is missing ({TIMM_TESTS}): run "
            "`make install` (its step `python tools/fetch_timm_tests.py` extracts it from timm's source release)"
        )


def test_every_backbone_is_iterated():
    """Each backbone goes through timm's per-model tests: none is dropped by a filter of timm's, and each of the
    main test functions iterates every backbone (a new timm version that renames or filters one shows here)."""
    assert TIMM_TESTS.is_file(), "see test_timm_tests_installed"
    assert not DROPPED, f"timm's exclude patterns drop backbones of ours: {DROPPED}"
    for function in (
        "test_model_forward",
        "test_model_backward",
        "test_model_default_cfgs",
        "test_model_forward_torchscript",
        "test_model_forward_features",
        "test_model_forward_intermediates_features",
        "test_model_forward_intermediates",
        "test_model_forward_fx",
        "test_model_backward_fx",
    ):
        # (test_model_default_cfgs iterates every tag, include_tags=True: a backbone with official tags comes back once
        # per tag; each must come back at least once)
        assert sorted(set(COLLECTED.get(function, []))) == sorted(BACKBONES), f"{function}: {LEFT_OUT.get(function)}"
    tagged = COLLECTED.get("test_model_default_cfgs", [])
    assert all(tagged.count(tag.split(".")[0]) > 1 for tag in OFFICIAL if tag.split(".")[0] in BACKBONES)
    # module=FEAT_INTER_FILTERS is not applied because every backbone has forward_intermediates:
    missing = [name for name in BACKBONES if not hasattr(db.registry.model_class(name), "forward_intermediates")]
    assert not missing, f"no forward_intermediates: {missing}"


# timm's tests whose model lists are hard-coded (timm's own models by name), called with each of our backbones: the
# function bodies are timm's, only the model name is ours (arguments as timm's own parametrizations pass them).
HARD_CODED = {
    "test_head_hidden_size": lambda name: (name, {}),
    "test_prune_intermediate_layers_params_used": lambda name: (name,),
}


# msdnet_imagenet's exits need 160 px or more; timm's test feeds 64x64 and our input check refuses it by name
TOO_SMALL = pytest.mark.xfail(raises=ValueError, strict=True, reason="timm's 64x64 input; msdnet_imagenet needs 160")
HARD_CODED_CASES = [
    pytest.param(
        function, name, marks=TOO_SMALL if (function, name) == ("test_head_hidden_size", "msdnet_imagenet") else ()
    )
    for function in sorted(HARD_CODED)
    for name in BACKBONES
]


@pytest.mark.parametrize(("function", "model_name"), HARD_CODED_CASES)
def test_timm_hard_coded_tests_on_our_backbones(function, model_name):
    assert TIMM_TESTS.is_file(), "see test_timm_tests_installed"
    getattr(timm_tests, function)(*HARD_CODED[function](model_name))
