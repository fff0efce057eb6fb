"""A ``TorchDispatchMode`` that holds CPU runs to the argument contracts of the CUDA kernels.

ATen's CPU kernels accept arguments that the CUDA kernels reject: on an H200 the default memory mode once failed at
its first backward (``save_mean->defined() INTERNAL ASSERT FAILED``, Normalization.cu:607) while every CPU test
passed, because the CPU kernel of ``native_batch_norm_backward`` tolerates an undefined ``save_mean``. Under
:class:`CudaContracts` every call of the ops below, whoever makes it (our shared-buffer code or autograd), is checked
against what the CUDA kernel needs, and a violation raises :class:`CudaContractError` naming the op, the argument and
the kernel's source line.

Only *direct* calls are checked: those made by Python code, outside backward or inside a custom autograd
``Function``'s backward (our dense block's). The calls torch's own autograd formulas make (``NativeBatchNormBackward0``
...) pass on what the same device's forward kernel returned, and the CPU forward returns CPU-shaped values (a bf16
model's CPU batch norm saves its statistics in bf16, the CUDA one in float32), so they say nothing about CUDA.

Sources (PyTorch 2.11, ``aten/src/ATen/native/``):

* ``cuda/Normalization.cu``, ``batch_norm_backward_cuda`` (L571-648): L607 and L617
  ``TORCH_INTERNAL_ASSERT(save_mean->defined())`` / ``save_invstd->defined()``; L611 and L621 an empty
  ``save_mean`` / ``save_invstd`` is allowed only with ``train=False`` and running statistics given; L589
  ``is_mixed_type(input, weight, running_mean, running_var)`` picks the template's statistics type from the *first
  defined* of those parameters; L743 ``TORCH_CHECK(mean_st == invstd_st)`` in ``batch_norm_backward_reduce_cuda``.
* ``cuda/Normalization.cuh``, ``batch_norm_backward_cuda_template`` and ``batch_norm_backward_reduce_cuda_template``:
  ``get_packed_accessor<const input_scalar_t>(grad_output)`` (grad_output in the input's dtype),
  ``packed_accessor_or_dummy<const stat_scalar_t>`` for weight, running_mean and running_var (each in one dtype),
  ``packed_accessor_or_dummy<const accscalar_t>`` for save_mean and save_invstd: float32 for half, bfloat16 and
  float32 inputs, float64 for float64 (``TORCH_CHECK(actual_type == expect_type)`` in ``get_packed_accessor``).
* ``Convolution.cpp``, ``convolution_backward``, ``case ConvBackend::Cudnn:
  check_input_same_type_as_parameters(input, weight)``; cuDNN's descriptors take one data type for grad_output,
  input and weight.
* ``cuda/Activation.cpp`` / TensorIterator: ``threshold_backward.grad_input`` computes in one dtype; an ``out``
  argument may be one of the inputs (full overlap) but not overlap one partially. (The CPU kernel has the same
  rules; checked so that every op the library calls directly is covered.)
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.autograd.function import BackwardCFunction
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["CudaContractError", "CudaContracts"]

aten = torch.ops.aten
_REDUCED = (torch.float16, torch.bfloat16)


class CudaContractError(AssertionError):
    """An op was called with arguments its CUDA kernel rejects."""


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """``at::toAccumulateType(dtype, /*is_cuda=*/true)`` for the floating types."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fail(op: str, message: str, source: str) -> None:
    raise CudaContractError(f"{op}: {message} (CUDA kernel: {source})")


def _check_batch_norm_backward(args) -> None:
    grad_out, x, weight, running_mean, running_var, save_mean, save_invstd, train = args[:8]
    op = "native_batch_norm_backward"
    if grad_out.dtype != x.dtype or grad_out.shape != x.shape:
        _fail(
            op,
            f"grad_output {grad_out.dtype} {tuple(grad_out.shape)} vs input {x.dtype} {tuple(x.shape)}",
            "Normalization.cuh get_packed_accessor<const input_scalar_t>(grad_output)",
        )
    # save_mean / save_invstd: always defined (L607, L617) ...
    for name, t, line in (("save_mean", save_mean, 607), ("save_invstd", save_invstd, 617)):
        if t is None:
            _fail(
                op, f"{name} is undefined (None)", f"Normalization.cu:{line} TORCH_INTERNAL_ASSERT({name}->defined())"
            )
    # ... empty only in eval mode with running statistics to fall back on (L611, L621) ...
    if save_mean.numel() == 0 or save_invstd.numel() == 0:
        if save_mean.numel() != save_invstd.numel():
            _fail(op, "one of save_mean / save_invstd is empty, the other not", "Normalization.cu:608-625")
        if train or running_mean is None or running_var is None:
            _fail(
                op,
                "empty save_mean/save_invstd need train=False and running_mean/running_var",
                "Normalization.cu:611 TORCH_CHECK(!train && running_mean->defined())",
            )
    else:  # ... and otherwise in the accumulate type of the input, both the same (L743, Normalization.cuh).
        acc = _accumulate_dtype(x.dtype)
        for name, t in (("save_mean", save_mean), ("save_invstd", save_invstd)):
            if t.dtype != acc:
                _fail(
                    op,
                    f"{name} is {t.dtype}, the kernel reads it as {acc} for {x.dtype} input",
                    "Normalization.cuh packed_accessor_or_dummy<const accscalar_t>(save_mean_)",
                )
            if t.shape != (x.shape[1],):
                _fail(op, f"{name} has shape {tuple(t.shape)}, expected ({x.shape[1]},)", "Normalization.cuh")
    # weight, running_mean, running_var: one dtype, the input's or (mixed type) float32 with half/bf16 input.
    params = {n: t for n, t in (("weight", weight), ("running_mean", running_mean), ("running_var", running_var))}
    dtypes = {n: t.dtype for n, t in params.items() if t is not None}
    if dtypes:
        stat = next(iter(dtypes.values()))  # is_mixed_type: the first defined parameter decides
        if stat != x.dtype and not (x.dtype in _REDUCED and stat == torch.float32):
            _fail(
                op,
                f"parameters in {stat} for {x.dtype} input",
                "Normalization.cu:589 is_mixed_type (mixed only as float32 parameters with half/bfloat16 input)",
            )
        if len(set(dtypes.values())) > 1:
            _fail(
                op,
                f"weight/running statistics in different dtypes {dtypes}",
                "Normalization.cuh packed_accessor_or_dummy<const stat_scalar_t>(weight_/running_mean_/running_var_)",
            )


def _check_convolution_backward(args) -> None:
    grad_out, x, weight = args[:3]
    dtypes = {"grad_output": grad_out.dtype, "input": x.dtype, "weight": weight.dtype}
    if len(set(dtypes.values())) > 1:
        _fail(
            "convolution_backward",
            f"arguments in different dtypes {dtypes}",
            "Convolution.cpp convolution_backward: case ConvBackend::Cudnn: "
            "check_input_same_type_as_parameters(input, weight)",
        )


def _check_threshold_backward(args, kwargs) -> None:
    grad, x = args[:2]
    out = kwargs.get("grad_input")
    tensors = {"grad_output": grad, "self": x} | ({"grad_input": out} if out is not None else {})
    if len({t.dtype for t in tensors.values()}) > 1:
        _fail("threshold_backward", f"dtypes differ { ({n: t.dtype for n, t in tensors.items()}) }", "TensorIterator")


def _direct_call() -> bool:
    """Whether the op being dispatched was called by Python code rather than by one of torch's autograd formulas."""
    node = torch._C._current_autograd_node()
    return node is None or isinstance(node, BackwardCFunction)


class CudaContracts(TorchDispatchMode):
    """Check every direct call of the ops above against its CUDA kernel's contract; ``counts`` says how many direct
    calls of each were checked, so a test can assert that the paths it means to cover ran."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        check = _CHECKS.get(func.overloadpacket)
        if check is not None and _direct_call():
            check(args, kwargs)
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **kwargs)


_CHECKS = {
    aten.native_batch_norm_backward: lambda args, kwargs: _check_batch_norm_backward(args),
    aten.convolution_backward: lambda args, kwargs: _check_convolution_backward(args),
    aten.threshold_backward: _check_threshold_backward,
}
