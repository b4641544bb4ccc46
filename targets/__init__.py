"""Targets the dispatcher places work on: GPU, simulated ASIC and host CPU.

The built-in kinds register themselves (`targets.base.register_kind`) when their modules are imported, which
this package does first, so that `targets.base.make_target` knows them without importing them back (no
import cycle). A new kind: a module with a `@register_kind("name")` Target class, imported here.

Targets import only dispatch's core (errors, cost, ir, fileio; docs/architecture.md), never the planner,
runtime or API above them; tests/test_layers.py checks it.
"""

import targets.asic.target  # noqa: F401  (registers "asic")
import targets.gpu  # noqa: F401  (registers "gpu" and "cpu")
