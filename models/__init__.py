"""The model zoo: torch modules written in this project, exported to ONNX with random weights and cached.

``import models`` is cheap: torch and onnx are imported only when a model is built or counted.
"""

from __future__ import annotations

from models.zoo import (
    ZOO,
    ZooEntry,
    build,
    example_inputs,
    is_zoo_name,
    list_models,
    param_count,
    torch_macs,
)

__all__ = ["ZOO", "ZooEntry", "build", "example_inputs", "is_zoo_name", "list_models", "param_count",
           "torch_macs"]
