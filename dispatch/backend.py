"""onnx's backend API (`onnx.backend.base.Backend`) on top of the Dispatcher.

    import dispatch.backend as backend
    rep = backend.prepare(model, "CPU", strategy="only:asic")   # plan and compile once
    outputs = rep.run([x])                                        # in the model's output order

Modelled on onnxruntime's `onnxruntime.backend`: `prepare` takes a ModelProto, its serialized bytes or a
path and returns a `DispatchBackendRep`; `run_model` is prepare + run; `supports_device` answers for the
devices the targets execute on here. Unlike onnxruntime's, `run_node` works: it wraps the node in a one-node
model (inputs typed from the arrays, the node's opset) and runs that.

Every keyword `prepare` takes goes to `dispatch.Dispatcher`: `targets`, `strategy`, `objective`, `shapes`,
`plan_cache_size`, `rtol`, `atol`, `plan_options`, `planner`; any other keyword is an option of the
strategy (e.g. `time_limit_s` for `optimal`), and one the strategy does not take is a DispatchError. Targets
given as preset names are built once per process and shared by every model prepared with the same names
(the Target contract makes them safe to share), so preparing a small model costs loading and planning it,
not building targets. The Dispatcher plans and compiles; nothing is measured or validated here.

Errors follow onnx's test runner: a device the backend cannot run is a DispatchError, and anything the
dispatcher cannot do (an operator no target runs, a model it refuses) raises its DispatchError, which the
runner reports as a failed case, never as a skip.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from dispatch.api import Dispatcher
from dispatch.errors import DispatchError
from targets.base import Target, load_spec, make_target

__all__ = ["BACKEND_TARGETS", "DispatchBackend", "DispatchBackendRep", "prepare", "run_model", "run_node",
           "supports_device", "is_compatible"]

# The default targets: the dispatcher's GPU and ASIC, and the host CPU that runs what neither can (strings,
# operators CUDA has no kernel for), as onnxruntime's CUDA provider hands those to its CPU provider. In this
# order `only:asic` falls back to the GPU first, then the CPU.
BACKEND_TARGETS = {"gpu": "h100-sxm", "cpu": "host-cpu", "asic": "tpu-v4-like"}

_DISPATCHER_ARGS = ("targets", "strategy", "objective", "shapes", "plan_cache_size", "rtol", "atol",
                    "plan_options", "planner")

_shared: dict[tuple[tuple[str, str], ...], dict[str, Target]] = {}
_shared_lock = threading.Lock()


def _shared_targets(spec: Mapping[str, str | os.PathLike | Target]) -> dict[str, Target]:
    """Targets for NAME -> preset, path or Target: presets built once per process, Targets used as given."""
    if not isinstance(spec, Mapping) or not spec:
        raise DispatchError("targets must be a non-empty dict of NAME -> preset, e.g. "
                            "{'gpu': 'h100-sxm', 'asic': 'tpu-v4-like'}.")
    named = tuple(sorted((str(k), os.fspath(v)) for k, v in spec.items() if not isinstance(v, Target)))
    with _shared_lock:
        built = _shared.get(named)
        if built is None:
            # The conformance suite checks the ONNX spec's float32 math, so the ASIC computes exactly here;
            # pass an AsicTarget built with numerics="emulate" to run its bf16 numerics (docs/numerics.md).
            built = {name: make_target(name, preset, **({"numerics": "exact"}
                                                        if load_spec(preset).kind == "asic" else {}))
                     for name, preset in named}
            _shared[named] = built
    return {k: v if isinstance(v, Target) else built[k] for k, v in spec.items()}


def _as_model(model: onnx.ModelProto | bytes | str | os.PathLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, bytes):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(model)
        except Exception:  # protobuf's DecodeError and friends
            raise DispatchError("The bytes given are not a serialized ONNX model; pass a ModelProto, its "
                                "SerializeToString() or a path.") from None
        return proto
    if isinstance(model, (str, os.PathLike)):
        from dispatch.frontend import load_model_proto

        return load_model_proto(model)[0]
    raise DispatchError(f"The model must be an onnx.ModelProto, its serialized bytes or a path, not "
                        f"{type(model).__name__}; pass one of those.")


def _as_array(x: Any) -> Any:
    """NumPy scalars as 0-d arrays (onnxruntime's backend does the same); everything else unchanged."""
    return np.asarray(x) if isinstance(x, np.generic) else x


class DispatchBackendRep(BackendRep):
    """A model prepared by the Dispatcher; `run` returns the outputs in the model's output order."""

    def __init__(self, dispatcher: Dispatcher, output_names: Sequence[str]) -> None:
        self.dispatcher = dispatcher
        self.output_names = tuple(output_names)
        self._outputs = namedtupledict("Outputs", self.output_names)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """inputs: a list with one array per fed input (initializers excluded) in the model's input order,
        a dict by input name, or one array when the model has one input. kwargs are not used."""
        names = self.dispatcher.input_names
        if isinstance(inputs, Mapping):
            feeds = {k: _as_array(v) for k, v in inputs.items()}
        elif isinstance(inputs, (list, tuple)):
            if len(inputs) != len(names):
                raise DispatchError(f"{len(inputs)} inputs given but the model takes {len(names)} "
                                    f"({list(names)}); pass one array per input, in that order.")
            feeds = {n: _as_array(v) for n, v in zip(names, inputs, strict=True)}
        else:
            if len(names) != 1:
                raise DispatchError(f"One array given but the model takes {len(names)} inputs "
                                    f"({list(names)}); pass a list with one array per input.")
            feeds = {names[0]: _as_array(inputs)}
        out = self.dispatcher.run(feeds)
        return self._outputs(*(out[n] for n in self.output_names))

    def close(self) -> None:
        self.dispatcher.close()


class DispatchBackend(Backend):
    """onnx's Backend: models planned on the dispatcher's targets and run through its runtime."""

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """CPU always (every target executes on the host here); CUDA when onnxruntime has its CUDA provider
        (the gpu target then executes on it)."""
        try:
            kind = Device(device).type
        except (AttributeError, ValueError):
            return False
        if kind == DeviceType.CPU:
            return True
        import onnxruntime as ort

        return "CUDAExecutionProvider" in ort.get_available_providers()

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: onnx.ModelProto | bytes | str | os.PathLike, device: str = "CPU",
                **kwargs: Any) -> DispatchBackendRep:
        """Load, plan and compile `model` with the Dispatcher; kwargs as the module doc says."""
        if isinstance(model, DispatchBackendRep):
            return model
        device = device or "CPU"
        if not cls.supports_device(device):
            raise DispatchError(f"Device '{device}' is not available to this backend; use 'CPU'.")
        proto = _as_model(model)
        args = {k: kwargs.pop(k) for k in _DISPATCHER_ARGS if k in kwargs}
        if kwargs:
            args["plan_options"] = {**dict(args.get("plan_options") or {}), **kwargs}
        args["targets"] = _shared_targets(args.get("targets") or BACKEND_TARGETS)
        outputs = [o.name for o in proto.graph.output]
        return DispatchBackendRep(Dispatcher(proto, **args), outputs)

    @classmethod
    def run_model(cls, model: onnx.ModelProto | bytes | str | os.PathLike, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[Any, ...]:
        rep = cls.prepare(model, device, **kwargs)
        try:
            return rep.run(inputs)
        finally:
            rep.close()

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Sequence[tuple[Any, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> tuple[Any, ...]:
        """Run one node on `inputs` (a list in the node's input order, or a dict by input name).

        outputs_info: (dtype, shape) per output, as onnx's runner gives it; otherwise shape inference finds
        them. opset_version in kwargs sets the node's opset (default: the newest onnx knows).
        """
        opset = kwargs.pop("opset_version", None)
        super().run_node(node, inputs, device, outputs_info, **({"opset_version": opset} if opset else {}))
        if isinstance(inputs, Mapping):
            arrays = [(n, np.asarray(inputs[n])) for n in node.input if n]
        else:
            present = [n for n in node.input if n]
            if len(inputs) != len(present):
                raise DispatchError(f"{len(inputs)} inputs given for {node.op_type} '{node.name}', which "
                                    f"reads {len(present)}; pass one array per input.")
            arrays = [(n, np.asarray(x)) for n, x in zip(present, inputs, strict=True)]
        graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in arrays]
        if outputs_info is not None:
            graph_outputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                                           shape)
                             for n, (dt, shape) in zip(node.output, outputs_info, strict=False)]
        else:
            graph_outputs = [helper.make_empty_tensor_value_info(n) for n in node.output if n]
        domain = node.domain or ""
        opsets = [helper.make_opsetid(domain, opset or onnx.defs.onnx_opset_version())]
        if domain not in ("", "ai.onnx"):
            opsets.append(helper.make_opsetid("", onnx.defs.onnx_opset_version()))
        model = helper.make_model(helper.make_graph([node], f"{node.op_type}_node", graph_inputs,
                                                    graph_outputs), opset_imports=opsets)
        if outputs_info is None:  # declare the outputs' types as shape inference finds them
            try:
                model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
            except onnx.shape_inference.InferenceError as e:
                why = str(e).strip().splitlines()[0]
                raise DispatchError(f"{node.op_type} '{node.name}' does not accept these inputs ({why}); "
                                    "check their dtypes and shapes.") from None
        return cls.run_model(model, dict(arrays), device, **kwargs)


is_compatible = DispatchBackend.is_compatible
prepare = DispatchBackend.prepare
run_model = DispatchBackend.run_model
run_node = DispatchBackend.run_node
supports_device = DispatchBackend.supports_device
