"""Fixtures for the application tests: see `harness`."""

from __future__ import annotations

import pytest

from tests.unit.application.harness import Ports, build_ports


@pytest.fixture
def ports() -> Ports:
    return build_ports()
