"""The outcomes of calls and the reasons generators stop: the core's words.

The instrumentation layer borrows them for labels and span attributes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CANCELLED", "ERROR", "OK"]

OK: Final = "ok"
"""The call returned (or the generator ran to its end)."""
ERROR: Final = "error"
"""The call raised, or could not be run."""
CANCELLED: Final = "cancelled"
"""The caller gave up (or the consumer left) before the outcome mattered."""
