"""The Open Inference Protocol's (KServe v2) REST tensors: decode an infer request, encode its response.

Pure functions over bytes, headers and NumPy arrays, no web framework, so they are tested on their own. A
request body is JSON, or, with the binary tensor data extension, a JSON header of `Inference-Header-Content-
Length` bytes followed by the raw bytes of the inputs whose `parameters.binary_data_size` is set, in input
order. A response is JSON, or the same split when an output asks for `binary_data` (or the request's
`parameters.binary_data_output` is true). Every bad request raises ProtocolError with one sentence; the app
answers it as `{"error": "..."}` with its 4xx status.
Protocol: https://github.com/kserve/open-inference-protocol (REST, and Triton's binary data extension).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["ProtocolError", "TensorMeta", "DATATYPES", "datatype_of", "decode_request", "encode_response",
           "HEADER_LENGTH"]

HEADER_LENGTH = "inference-header-content-length"

# protocol datatype -> NumPy dtype (BYTES, strings, is not served: no target here computes on strings)
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
    "BF16": np.dtype(ml_dtypes.bfloat16),
}
_NAMES = {dt: name for name, dt in DATATYPES.items()}


class ProtocolError(Exception):
    """A bad request: `status` (4xx) and one sentence saying what is wrong and what to send instead."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TensorMeta:
    """An input or output as the model metadata gives it: shape -1 where a dimension is symbolic/unknown."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def datatype_of(dtype: np.dtype) -> str:
    """The protocol's name of a NumPy dtype, e.g. float32 -> FP32; BYTES for anything it cannot name."""
    return _NAMES.get(np.dtype(dtype), "BYTES")


def _header(body: bytes, headers: Mapping[str, str]) -> tuple[dict[str, Any], memoryview]:
    """The JSON header as a dict and the binary part after it (empty without the extension)."""
    raw = headers.get(HEADER_LENGTH)
    if raw is None:
        json_part, rest = body, memoryview(b"")
    else:
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise ProtocolError(f"The Inference-Header-Content-Length header ({raw!r}) must be a whole "
                                f"number of bytes within the body's {len(body)}; send the JSON header's "
                                "length.")
        json_part, rest = body[:n], memoryview(body)[n:]
    try:
        doc = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"The request body is not valid JSON ({e}); send an inference request object "
                            'such as {"inputs": [{"name": ..., "datatype": ..., "shape": ..., "data": ...}]}.'
                            ) from None
    if not isinstance(doc, dict):
        raise ProtocolError(f"The request body must be a JSON object, not {type(doc).__name__}; send "
                            '{"inputs": [...]}.')
    return doc, rest


def _shape(tensor: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0
                                          for d in shape):
        raise ProtocolError(f"Input '{name}' needs \"shape\": a list of non-negative integers, not "
                            f"{shape!r}.")
    return tuple(shape)


def decode_request(body: bytes, headers: Mapping[str, str], inputs: Sequence[TensorMeta]
                   ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The feeds (name -> array, checked against the model's inputs) and the request's JSON header."""
    doc, binary = _header(body, headers)
    tensors = doc.get("inputs")
    if not isinstance(tensors, list) or not all(isinstance(t, dict) for t in tensors):
        raise ProtocolError('The request needs "inputs": a list of tensor objects, each with "name", '
                            '"datatype", "shape" and "data".')
    by_name = {m.name: m for m in inputs}
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for t in tensors:
        name = t.get("name")
        meta = by_name.get(name) if isinstance(name, str) else None
        if meta is None:
            raise ProtocolError(f"The model has no input {name!r}; its inputs are "
                                f"{', '.join(repr(n) for n in by_name)}.")
        if name in feeds:
            raise ProtocolError(f"Input '{name}' is given twice; send each input once.")
        if t.get("datatype") != meta.datatype:
            raise ProtocolError(f"Input '{name}' has datatype {t.get('datatype')!r}, but the model takes "
                                f"{meta.datatype}; send it as {meta.datatype}.")
        shape = _shape(t, name)
        if len(shape) != len(meta.shape) or any(m not in (-1, d) for m, d in zip(meta.shape, shape,
                                                                                   strict=False)):
            want = "x".join("?" if d < 0 else str(d) for d in meta.shape)
            raise ProtocolError(f"Input '{name}' has shape {list(shape)}, but the model takes {want} "
                                "(? any size); send that shape.")
        dtype = DATATYPES[meta.datatype]
        count = int(np.prod(shape, dtype=np.int64))
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if isinstance(size, bool) or not isinstance(size, int) or size != count * dtype.itemsize:
                raise ProtocolError(f"Input '{name}' declares binary_data_size {size!r}, but {list(shape)} "
                                    f"{meta.datatype} takes {count * dtype.itemsize} bytes; fix the size.")
            if offset + size > len(binary):
                raise ProtocolError(f"Input '{name}' needs {size} bytes of binary data, but only "
                                    f"{len(binary) - offset} follow the JSON header; send all of them.")
            arr = np.frombuffer(binary[offset:offset + size], dtype=dtype).reshape(shape).copy()
            offset += size
        else:
            if "data" not in t:
                raise ProtocolError(f"Input '{name}' has no \"data\" (nor binary_data_size); send its "
                                    "elements.")
            try:
                arr = np.asarray(t["data"], dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                raise ProtocolError(f"Input '{name}' has data that is not a (nested) list of "
                                    f"{meta.datatype} numbers; send numbers only.") from None
            if arr.size != count:
                raise ProtocolError(f"Input '{name}' has {arr.size} elements in \"data\", but shape "
                                    f"{list(shape)} holds {count}; send as many as the shape holds.")
            arr = arr.reshape(shape)
        feeds[name] = arr
    missing = [n for n in by_name if n not in feeds]
    if missing:
        raise ProtocolError(f"The request lacks the input(s) {', '.join(repr(n) for n in missing)}; send "
                            "every input of the model.")
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data follow the JSON header that no "
                            "input's binary_data_size claims; send exactly the declared bytes.")
    return feeds, doc


def encode_response(doc: Mapping[str, Any], outputs: Mapping[str, np.ndarray], model: str,
                    version: str = "1") -> tuple[bytes, dict[str, str]]:
    """The response body and headers for the outputs the request asked for (all when it names none)."""
    params = doc.get("parameters") if isinstance(doc.get("parameters"), dict) else {}
    binary_default = bool(params.get("binary_data_output", False))
    asked = doc.get("outputs")
    if asked is None:
        wanted = [(name, binary_default) for name in outputs]
    else:
        if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
            raise ProtocolError('"outputs" must be a list of objects with a "name".')
        wanted = []
        for o in asked:
            name = o.get("name")
            if name not in outputs:
                raise ProtocolError(f"The model has no output {name!r}; its outputs are "
                                    f"{', '.join(repr(n) for n in outputs)}.")
            p = o.get("parameters") if isinstance(o.get("parameters"), dict) else {}
            wanted.append((name, bool(p.get("binary_data", binary_default))))
    tensors, blobs = [], []
    for name, binary in wanted:
        arr = np.ascontiguousarray(outputs[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(arr.dtype), "shape": list(arr.shape)}
        if binary:
            blob = arr.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = arr.astype(np.float32).ravel().tolist() if arr.dtype == DATATYPES["BF16"] \
                else arr.ravel().tolist()
        tensors.append(entry)
    out: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": tensors}
    if isinstance(doc.get("id"), str):
        out["id"] = doc["id"]
    head = json.dumps(out, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream",
                                    HEADER_LENGTH: str(len(head))}
