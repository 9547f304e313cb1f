"""Fixtures for the application tests: see `harness`."""

from __future__ import annotations

import pytest

from tests.unit.application.harness import Ports, act_as, build_ports


@pytest.fixture
def ports() -> Ports:
    act_as()  # every test starts as an anonymous caller, whatever ran before it
    return build_ports()
