"""In-memory fakes of the domain ports, one module per port family."""

from tests.support.fakes.audit import FakeAuditAppender
from tests.support.fakes.clock import FakeClock

__all__ = ["FakeAuditAppender", "FakeClock"]
