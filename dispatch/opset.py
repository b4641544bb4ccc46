"""Which opsets and domains a model may use, and upgrading models older than opset 7.

Opsets 1 to 6 predate numpy-style broadcasting and several of the operator versions onnxruntime and the
rest of this tool are written against, so such a model is upgraded to opset MIN_OPSET with
`onnx.version_converter` (the same adapters `onnx.version_converter.convert_version` applies by hand),
and loading records a note saying so. A model the converter cannot upgrade is refused in one sentence
that names the converter's reason.
"""

from __future__ import annotations

import re

import onnx

from dispatch.errors import DispatchError

__all__ = ["MIN_OPSET", "MAX_OPSET", "KNOWN_DOMAINS", "default_opset", "check_opset"]

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()
# Domains whose operators onnx or onnxruntime define; anything else has no implementation to run.
KNOWN_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


def default_opset(model: onnx.ModelProto) -> int:
    """The default-domain ('' or 'ai.onnx') opset the model imports, 0 when none."""
    opset = 0
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = imp.version
    return opset


def _converter_reason(e: Exception) -> str:
    """The converter's own words without its source location, e.g. 'No Adapter From Version $5 for Tile'."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\S+:\d+: \w+: ", "", text)  # "/project/onnx/.../convert.cc:101: convert_graph: "
    text = re.sub(r"^Assertion `.*?` failed: ", "", text)
    return text.rstrip(".")[:200]


def _upgrade(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # noqa: BLE001 - the converter raises RuntimeError or IndexError from C++ asserts
        raise DispatchError(f"The model uses opset {opset}, which is older than opset {MIN_OPSET}, and "
                            f"onnx.version_converter cannot upgrade it ({_converter_reason(e)}); re-export "
                            f"the model with opset {MIN_OPSET} to {MAX_OPSET}.") from None
    return upgraded


def _all_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The graph's nodes and those of every subgraph (If/Loop/Scan bodies), recursively."""
    out = []
    for n in graph.node:
        out.append(n)
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                out += _all_nodes(g)
    return out


def _with_default_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.opset_import.append(onnx.helper.make_opsetid("", version))
    return m


def check_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, list[str]]:
    """Check the model's opset and domains; upgrade opsets below MIN_OPSET.

    Returns (model, opset, notes): the model itself when it needed no upgrade, else an upgraded copy; the
    default-domain opset it has now; what was done, in words.
    """
    opset = default_opset(model)
    if not opset and not any(n.domain in ("", "ai.onnx") for n in _all_nodes(model.graph)):
        # Only other domains' operators (an ai.onnx.ml pipeline): the default opset matters to nothing, and
        # the tools downstream read it, so import the newest.
        model = _with_default_opset(model, MAX_OPSET)
        return model, MAX_OPSET, []
    if not opset:
        raise DispatchError("The model imports no default ONNX opset; re-export it with an opset "
                            f"between {MIN_OPSET} and {MAX_OPSET}.")
    if opset > MAX_OPSET:
        raise DispatchError(f"The model uses opset {opset}, but the installed onnx knows opsets up to "
                            f"{MAX_OPSET}; upgrade onnx or re-export the model with opset {MAX_OPSET} or "
                            "older.")
    for n in model.graph.node:
        if n.domain not in KNOWN_DOMAINS:
            raise DispatchError(f"Node '{n.name or n.op_type}' uses operator '{n.op_type}' of unknown domain "
                                f"'{n.domain}'; only the domains {sorted(KNOWN_DOMAINS)} can be run, so "
                                "replace the custom operator before dispatching.")
    if opset >= MIN_OPSET:
        return model, opset, []
    upgraded = _upgrade(model, opset)
    return upgraded, default_opset(upgraded), [f"opset {opset} upgraded to opset {MIN_OPSET} with "
                                               "onnx.version_converter"]
