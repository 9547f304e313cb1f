"""PostgreSQL: an audit append's head read under its lock, and its announcement, take
no round trips of their own

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

An append takes the advisory lock and then reads the head. Sent as two statements that
is two round trips; in one ordinary statement the head would be read from a snapshot
taken before the lock was granted. A VOLATILE PL/pgSQL function runs each statement
with a snapshot of its own, so its head read sees every append committed before the
lock. The lock is the one every earlier version takes: replicas of either version
append in turn.

Appended rows announce themselves: a statement trigger notifies `keyhold_audit` with
the highest sequence it inserted, as the appender's own NOTIFY statement did (delivered
at commit; a listener only moves forward, so a second notice from an older replica is
harmless).
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

FUNCTION = """
CREATE FUNCTION keyhold_audit_head_locked(lock_key bigint)
RETURNS TABLE (head_sequence bigint, head_hash bytea)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN QUERY
        SELECT e.sequence, e.hash FROM audit_events AS e ORDER BY e.sequence DESC LIMIT 1;
END
$$
"""


ANNOUNCE = """
CREATE FUNCTION keyhold_audit_announce() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keyhold_audit', max(sequence)::text) FROM appended;
    RETURN NULL;
END
$$
"""

TRIGGER = """
CREATE TRIGGER audit_events_announce AFTER INSERT ON audit_events
REFERENCING NEW TABLE AS appended
FOR EACH STATEMENT EXECUTE FUNCTION keyhold_audit_announce()
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION)
        op.execute(ANNOUNCE)
        op.execute(TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_events_announce ON audit_events")
        op.execute("DROP FUNCTION keyhold_audit_announce()")
        op.execute("DROP FUNCTION keyhold_audit_head_locked(bigint)")
