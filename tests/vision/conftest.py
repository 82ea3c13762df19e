"""Tests marked ``vision`` need torchvision and timm next to a torch they were built for.

``make test-vision`` runs them in ``.venv-vision`` (torch 2.14.1, torchvision 0.29.1, timm);
in the default environment (CPU torch 2.13.0, no torchvision) they are skipped, and
``POISONLAB_REQUIRE_VISION=1`` (set by ``make test-vision``) turns the skip into a failure.
"""

from __future__ import annotations

import os

import pytest

from poisonlab.errors import ConfigError
from poisonlab.external_models import import_vision


def _why_not() -> str | None:
    for module in ("torchvision", "timm"):
        try:
            import_vision(module)
        except ConfigError as e:
            return str(e)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if "vision" in item.keywords]
    why = _why_not() if marked else None
    if why and os.environ.get("POISONLAB_REQUIRE_VISION") == "1":
        raise pytest.UsageError(f"POISONLAB_REQUIRE_VISION=1 but {why}")
    for item in marked if why else []:
        item.add_marker(pytest.mark.skip(reason=why))
