"""The sanity checks' old home: everything here is :mod:`poisonlab.sanity` now.

Kept so that ``from poisonlab.checks import run_checks`` and the like keep working;
new code imports from ``poisonlab.sanity`` (issue 20: "check" names the gate only).
"""

from __future__ import annotations

from .sanity import *  # noqa: F403
from .sanity import __all__ as __all__
