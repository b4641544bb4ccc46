"""Targets the dispatcher places work on: GPU, simulated ASIC and host CPU."""

# dispatch's package init reaches targets.base (dispatch.api -> plan -> problem), and targets.base imports
# dispatch.cost; importing dispatch first lets `import targets.base` work as a program's first import.
import dispatch  # noqa: F401
