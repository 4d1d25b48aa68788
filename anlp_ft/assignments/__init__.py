"""Assignment format: solution notebooks are the source of truth, labs are generated from them.

See :mod:`anlp_ft.assignments.markers` for the marker syntax, :mod:`.sync` for regenerating
``labs/`` and :mod:`.checks` for the public checks students run from a lab.
"""

from .checks import MISSING, Checker, CheckFailed, attempt
from .markers import render_lab
from .sync import sync_labs

__all__ = ["MISSING", "CheckFailed", "Checker", "attempt", "render_lab", "sync_labs"]
