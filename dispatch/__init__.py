"""dispatch: place each operator of an ONNX model on a GPU or an ASIC, and report what follows.

The names below are loaded on first use (PEP 562 `__getattr__`), so that importing a core module such as
`dispatch.cost` (which every target does) does not pull in the API and, through it, the targets themselves:
the layers import downward only (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Dispatcher", "load", "analyze", "Graph", "Node", "Value", "OpCost", "Cost", "DispatchError"]
__version__ = "0.1.0"

_HOME = {
    "Dispatcher": "dispatch.api",
    "load": "dispatch.frontend",
    "analyze": "dispatch.analysis",
    "Graph": "dispatch.ir",
    "Node": "dispatch.ir",
    "Value": "dispatch.ir",
    "OpCost": "dispatch.cost",
    "Cost": "dispatch.cost",
    "DispatchError": "dispatch.errors",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dispatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
