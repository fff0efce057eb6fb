"""The runtimes an exported file runs in (onnxruntime, OpenVINO, ExecuTorch), behind one call: images in (a float32
tensor, N x C x H x W), the file's outputs out as tensors. :func:`compare_with_eager` checks a file against the
PyTorch model it came from; :class:`RuntimeModel` lets the evaluation path (``engine.evaluate_record``) score a file
as it scores a model.

Each runtime refuses an input outside the range the export recorded (``densebackbones.export.ExportInfo``, the JSON
beside the file) with one line naming the file, the shape and the fix, instead of the runtime's own message
("Got invalid dimensions for input", or a crash in a kernel).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .export import ExportInfo, assert_close_to_scale

__all__ = [
    "RUNTIMES",
    "Runtime",
    "open_runtime",
    "smallest_runnable_size",
    "compare_with_eager",
    "RuntimeModel",
    "flat_tensors",
]


def flat_tensors(output: Any) -> list[Tensor]:
    """The tensors of a model's output (a tensor, or nested tuples, lists and dicts of them), in order: the order of
    an exported file's outputs."""
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    return [t for item in output for t in flat_tensors(item)]


class Runtime:
    """An exported file loaded in its runtime; ``runtime(images)`` returns its outputs as float tensors."""

    name = ""
    format = ""  # tools/export.py's --format of the files it reads

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist (export it with tools/export.py)")
        self.info = ExportInfo.load(self.path)
        self.threads = threads or torch.get_num_threads()

    def __call__(self, images: Tensor) -> list[Tensor]:
        if images.dim() != 4:
            raise ValueError(f"{self.path.name}: images are N x C x H x W, got shape {tuple(images.shape)}")
        if self.info is not None:
            self.info.check_input(tuple(images.shape), f"{self.path.name} ({self.name})")
        array = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return [torch.from_numpy(np.asarray(out)).clone() for out in self._run(array)]

    def _run(self, images: np.ndarray) -> Sequence[np.ndarray]:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    name, format = "onnxruntime", "onnx"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime

        super().__init__(path, threads)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3  # onnxruntime's own warnings (unused initializers...) are not the user's
        self.session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, images: np.ndarray) -> Sequence[np.ndarray]:
        return self.session.run(None, {self.input_name: images})


class OpenVinoRuntime(Runtime):
    """OpenVINO's CPU plug-in with its inference precision pinned to float32 for float models: by default it runs
    them in bfloat16 on CPUs with AMX or AVX512-BF16, which changes logits by about 1 % of their scale (an int8
    model runs its quantized layers in int8 whatever the hint)."""

    name, format = "openvino", "openvino"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import openvino as ov

        super().__init__(path, threads)
        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads}
        self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def _run(self, images: np.ndarray) -> Sequence[np.ndarray]:
        results = self.request.infer({0: images})
        return [results[output] for output in self.compiled.outputs]


class ExecuTorchRuntime(Runtime):
    name, format = "executorch", "executorch"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from executorch.runtime import Runtime as ETRuntime

        super().__init__(path, threads)
        self.method = ETRuntime.get().load_program(str(self.path)).load_method("forward")

    def _run(self, images: np.ndarray) -> Sequence[np.ndarray]:
        return [out.numpy() for out in self.method.execute([torch.from_numpy(images)])]


RUNTIMES: dict[str, type[Runtime]] = {".onnx": OnnxRuntime, ".xml": OpenVinoRuntime, ".pte": ExecuTorchRuntime}


def open_runtime(path: str | Path, threads: int | None = None) -> Runtime:
    """The runtime of an exported file, chosen by its suffix (``.onnx``, ``.xml``, ``.pte``); ``threads``: the
    runtime's intra-op threads (default: PyTorch's)."""
    path = Path(path)
    runtime = RUNTIMES.get(path.suffix)
    if runtime is None:
        raise ValueError(f"{path.name}: no runtime reads *{path.suffix} files; use one of {sorted(RUNTIMES)}")
    return runtime(path, threads)


def smallest_runnable_size(runtime: Runtime, in_chans: int, low: int, high: int) -> tuple[int, str]:
    """The smallest side from ``low`` to ``high`` at which ``runtime`` runs its file (one square image), and the
    runtime's message at the side below it ("" when ``low`` runs): a runtime may lack what PyTorch allows at small
    sizes (OpenVINO's MaxPool refuses a window larger than its map, which PyTorch's ceil mode accepts: the reason
    for ``export.ExplicitCeilMaxPool2d``). The sizes that run are assumed to be all those above some side (maps grow
    with the input).
    Raises ``ValueError`` naming the runtime and its message when not even ``high`` runs."""

    def failure(side: int) -> str:
        try:
            runtime._run(np.zeros((1, in_chans, side, side), dtype=np.float32))
        except RuntimeError as err:
            return " ".join(str(err).split())[-300:]
        return ""

    below = failure(low)
    if not below:
        return low, ""
    message = failure(high)
    if message:
        others = " or ".join(sorted(cls.format for cls in RUNTIMES.values() if cls.format != runtime.format))
        raise ValueError(
            f"{runtime.path.name}: {runtime.name} cannot run the model at {high}x{high} px ({message}); export it "
            f"with --format {others}"
        )
    while high - low > 1:  # low fails (with message ``below``), high runs
        mid = (low + high) // 2
        message = failure(mid)
        if message:
            low, below = mid, message
        else:
            high = mid
    return high, below


def compare_with_eager(
    model: nn.Module,
    runtime: Runtime,
    shapes: Sequence[Sequence[int]],
    rtol: float = 1e-4,
    atol: float = 1e-4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Run random images of each shape through ``model`` (eval) and the file, output by output; returns per shape
    its largest difference relative to the output's scale. Raises ``AssertionError`` naming the shape and output
    when an element is outside ``atol * scale + rtol * |expected|`` (``assert_close_to_scale``)."""
    generator = torch.Generator().manual_seed(seed)
    results = []
    for shape in shapes:
        images = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = flat_tensors(model.eval()(images))
        try:
            got = runtime(images)
        except RuntimeError as err:  # the runtime's own failure, named with the shape
            raise AssertionError(f"{runtime.name} failed at input shape {tuple(shape)}: {err}") from err
        if len(got) != len(expected):
            raise AssertionError(
                f"{runtime.path.name}: {len(got)} outputs at input shape {tuple(shape)}, PyTorch {len(expected)}"
            )
        worst = 0.0
        names = runtime.info.outputs if runtime.info is not None else [str(i) for i in range(len(got))]
        for name, g, e in zip(names, got, expected):
            where = f"{runtime.name} output '{name}' at input shape {tuple(shape)}"
            if tuple(g.shape) != tuple(e.shape):
                raise AssertionError(f"{where} has shape {tuple(g.shape)}, PyTorch {tuple(e.shape)}")
            assert_close_to_scale(g.to(e.dtype), e, rtol, atol, what=where)
            scale = max(float(e.abs().max()), 1e-12)
            worst = max(worst, float((g.to(e.dtype) - e).abs().max()) / scale)
        results.append({"shape": list(shape), "max_rel_error": worst})
    return results


class RuntimeModel(nn.Module):
    """An exported file as a module: ``forward(images)`` runs the file on the CPU and returns its output (one
    tensor, or a tuple as the model returned), on the images' device, so that ``engine.evaluate_record`` and the
    tasks' ``eval_forward`` (ten crops, sliding windows) score it as they score the model it came from. Detectors'
    files return ``(loc, conf, priors)``; the model's ``output`` says so, for the detection task's evaluation."""

    def __init__(self, runtime: Runtime, output: str | None = None) -> None:
        super().__init__()
        self.runtime = runtime
        if output is not None:
            self.output = output

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        outputs = [out.to(images.device) for out in self.runtime(images)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
