"""``export``: a classifier and its FastCAM maps as one ONNX graph, its FastCAMSpec in the metadata.

The graph is the one every backend runs (:func:`rtsal.engine.backends.common.graph_of`) with the host
assembly done inside (:class:`rtsal.deploy.graph.ExportGraph`). It is traced by ``torch.onnx.export``,
first with the dynamo exporter (``torch.export``), then, if that cannot trace the model, with the
TorchScript exporter. The file is written atomically
(``rtsal.outputs``): the output path holds the old file or the complete new one, never a partial one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rtsal.errors import ModelError, UsageError
from rtsal.outputs import atomic_write_bytes, check_outputs

if TYPE_CHECKING:
    from torch import nn

__all__ = ["EXTRA_HINT", "META_PREFIX", "export", "require_onnx"]

EXTRA_HINT = 'pip install "rtsal[onnx]"'
META_PREFIX = "rtsal."


def require_onnx(runtime_only: bool = False) -> None:
    """Raise one line naming the extra to install when onnx / onnxruntime / onnxscript are missing."""
    names = ("onnxruntime",) if runtime_only else ("onnx", "onnxruntime", "onnxscript")
    for name in names:
        try:
            __import__(name)
        except ImportError:
            raise UsageError(f"this needs the ONNX extra ({name} is not installed): {EXTRA_HINT}") from None


def export(
    model: str | nn.Module,
    output: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = "default",
    method: str = "fastcam",
    cam: str = "gradcampp",
    norm: str = "gauss",
    layer_weights: str | Sequence[float] = "equal",
    statistic: str = "smoe",
    layers: Sequence[str] | None = None,
    size: tuple[int, int] = (224, 224),
    dynamic_batch: bool = False,
    opset: int | None = None,
    uint8_input: bool = False,
    frame_size: tuple[int, int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Export ``model`` with its saliency maps to the ONNX file ``output``; returns its path.

    The graph's input ``images`` is the normalised batch (N, 3, H, W) float32, ``size`` = (H, W); with
    ``uint8_input`` it is RGB uint8 frames (N, FH, FW, 3), ``frame_size`` = (FH, FW) (default ``size``),
    resized and normalised inside. Outputs (:data:`rtsal.deploy.graph.OUTPUTS`): ``logits`` (N, classes),
    ``saliency`` (the ``method``'s map), ``scales`` (N, L, H, W), ``smoe``, ``cam``, ``fused`` and
    ``nonclass``, every map (N, H, W) in [0, 1] at model resolution, the CAM for the top-1 class (from the
    linear head in closed form, or from the head's traced gradient for other heads). The
    :class:`~rtsal.engine.spec.FastCAMSpec` (``rtsal.spec``), the export's own settings, the class names,
    mean/std and layer names are stored in the metadata (keys ``rtsal.*``). N is 1, or any with
    ``dynamic_batch`` (closed-form heads only: a head gradient is traced for one batch size).

    Examples:
        >>> import rtsal  # doctest: +SKIP
        >>> rtsal.export("efficientnet-lite0", "lite0.onnx", size=(224, 224))  # doctest: +SKIP
    """
    require_onnx()
    from rtsal.names import ENGINE_METHODS

    if method not in ENGINE_METHODS:
        raise UsageError(f"cannot export method {method!r}: choose one of {', '.join(ENGINE_METHODS)}")
    if norm == "gamma":
        raise UsageError("--norm gamma cannot be exported (its incomplete gamma function has no ONNX "
                         "operator): use gauss or range")
    size = _check_size("size", size)
    if frame_size is not None:
        if not uint8_input:
            raise UsageError("a frame size applies to --uint8-input only")
        frame_size = _check_size("frame size", frame_size)
    if opset is not None and not 17 <= opset <= 23:
        raise UsageError(f"--opset must be within 17..23, got {opset}")
    inputs = [weights] if isinstance(weights, (str, os.PathLike)) and weights != "default" else []
    if isinstance(model, str):
        inputs.append(model)  # a name is no file, but a path typed by mistake must not be overwritten
    (out,) = check_outputs(inputs, [("-o", output)])
    data = export_bytes(model, weights=weights, method=method, cam=cam, norm=norm,
                        layer_weights=layer_weights, statistic=statistic, layers=layers, size=size,
                        dynamic_batch=dynamic_batch, opset=opset, uint8_input=uint8_input,
                        frame_size=frame_size, mean=mean, std=std, class_names=class_names)
    return atomic_write_bytes(out, data)


def export_bytes(model: str | nn.Module, **options: Any) -> bytes:
    """The serialised ONNX model of :func:`export` (same keyword options, no output path): the spec's graph
    (:func:`~rtsal.engine.backends.common.graph_of`) with the host assembly inside
    (:class:`~rtsal.deploy.graph.ExportGraph`)."""
    import torch

    from rtsal.deploy.graph import OUTPUTS, ExportGraph, UInt8Input
    from rtsal.engine.backends.common import graph_of
    from rtsal.engine.explainer import Explainer
    from rtsal.engine.graph import HeadError, clean_copy

    __version__ = _rtsal_version()

    size = options["size"]
    settings = {k: options[k] for k in ("weights", "method", "cam", "norm", "layer_weights", "statistic",
                                        "layers", "mean", "std", "class_names")}
    with Explainer(model, **settings, size=size, channels_last=False) as ex:
        spec = ex.spec.for_input((1, 3, *size))
        if spec.head == "gradient" and options["dynamic_batch"]:
            raise UsageError(f"{ex.name} has no global-average-pool -> linear head: its CAM comes from the "
                             f"head's gradient, traced for one batch size, so leave out --dynamic-batch")
        mean, std, class_names = list(ex.mean), list(ex.std), list(ex.class_names)
        layers = [i.label for i in ex.layers]
        module = clean_copy(ex.model).eval()
    try:
        graph = graph_of(spec, module, "onnxruntime")
    except HeadError as exc:
        raise ModelError(f"the CAM of {spec.model} cannot be exported: {_first_line(exc)}") from None
    try:
        net: torch.nn.Module = ExportGraph(graph, spec)
        if options["uint8_input"]:
            net = UInt8Input(net, mean, std, size)
            fh, fw = options["frame_size"] or size
            example = torch.randint(0, 256, (1, fh, fw, 3), dtype=torch.uint8)
        else:
            example = torch.randn(1, 3, *size)
        net.eval()
        try:
            with torch.inference_mode():
                net(example)
        except Exception as exc:
            raise ModelError(
                f"{spec.model} does not run at {size[0]}x{size[1]}: {_first_line(exc)}"
            ) from None
        proto = _trace(net, example, OUTPUTS, options["dynamic_batch"], options["opset"])
    finally:
        graph.close()
    exported = {  # how the file was exported; what it computes is the spec
        "rtsal_version": __version__,
        "input": "uint8" if options["uint8_input"] else "float",
        "frame_size": list(options["frame_size"] or size) if options["uint8_input"] else None,
        "dynamic_batch": bool(options["dynamic_batch"]),
        "target": "top-1",
        "outputs": list(OUTPUTS),
    }
    meta = {
        "spec": spec.to_json(),
        "settings": json.dumps(exported),
        "class_names": json.dumps(class_names),
        "mean": json.dumps(mean),
        "std": json.dumps(std),
        "layers": json.dumps(layers),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = META_PREFIX + key, value
    proto.producer_name = "rtsal"
    proto.producer_version = __version__
    return proto.SerializeToString()


def _trace(net: Any, example: Any, outputs: Sequence[str], dynamic_batch: bool, opset: int | None) -> Any:
    """Trace ``net`` to an ``onnx.ModelProto``: the dynamo exporter first, the TorchScript one as fallback."""
    import onnx
    import torch

    errors = []
    # both exporters print progress and, on failure, whole graphs (some from C++): keep the terminal clean
    with warnings.catch_warnings(), _quiet():
        warnings.simplefilter("ignore")
        try:
            kwargs: dict[str, Any] = {}
            if dynamic_batch:
                kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=4096)},)
            program = torch.onnx.export(net, (example,), None, dynamo=True, input_names=["images"],
                                        output_names=list(outputs), opset_version=opset, verbose=False,
                                        external_data=False, optimize=True, **kwargs)
            return program.model_proto
        except Exception as exc:  # the dynamo exporter raises many types for a model it cannot trace
            errors.append(exc)
        try:
            buf = io.BytesIO()
            axes = {name: {0: "batch"} for name in ("images", *outputs)} if dynamic_batch else None
            torch.onnx.export(net, (example,), buf, dynamo=False, input_names=["images"],
                              output_names=list(outputs), opset_version=opset or 18, dynamic_axes=axes)
            return onnx.load_model_from_string(buf.getvalue())
        except Exception as exc:
            errors.append(exc)
    raise ModelError(f"the ONNX exporter cannot trace this model: {_reason(errors)}")


@contextlib.contextmanager
def _quiet() -> Any:
    """Send Python's and the C++ side's stdout and stderr to /dev/null for the duration."""
    import sys

    saved = []
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
        finally:
            os.close(devnull)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _reason(errors: Sequence[BaseException]) -> str:
    """The most telling line of the exporters' errors: one naming an operator if any, else the first."""
    import re

    lines = []
    for exc in errors:
        chain: BaseException | None = exc
        while chain is not None:
            lines.append(re.sub(r"\x1b\[[0-9;]*m", "", _first_line(chain)))
            chain = chain.__cause__
    for line in lines:
        if "operator" in line.lower() or "aten" in line:
            return line
    return lines[-1] if lines else "unknown error"


def _rtsal_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtsal")
    except PackageNotFoundError:
        return "unknown"


def _check_size(what: str, size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be two numbers H W, got {size!r}") from None
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise UsageError(f"{what} must be within 32..4096 pixels, got {h}x{w}")
    return h, w


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:200]
