"""The project's own exception type for bad input and impossible configurations."""

from __future__ import annotations

__all__ = ["DispatchError"]


class DispatchError(Exception):
    """Bad input or an impossible configuration; the message is one sentence saying what to do."""
