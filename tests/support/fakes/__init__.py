"""In-memory fakes of the domain ports, one module per port family.

The repositories keep their rows in an `InMemoryStore` (`store`) under the SQL
schema's rules: uniqueness, foreign keys and cascades, and what a duplicate raises.
`FakeUnitOfWork` commits a block's writes when it ends cleanly and discards them when
it raises; the rotator and the lookups outside a unit of work read and write the
same store."""

from tests.support.fakes.audit import FakeAuditAppender
from tests.support.fakes.clock import FakeClock

__all__ = ["FakeAuditAppender", "FakeClock"]
