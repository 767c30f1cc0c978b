"""The floor for the AitbcDatabase benchmark: the SQL of N create reconciles, run directly in one psycopg loop.

No operator, no Kubernetes, no asyncio, no pool: one synchronous connection executes exactly the statements a create
reconcile executes (observe, the planned DDL with a SCRAM verifier computed by libpq like the operator's, the size
query). Whatever the operator takes beyond this is the operator's own overhead.

    from benchmarks.db_floor import create_floor
    result = create_floor(admin_conninfo, [DesiredDatabase(...), ...], password="...")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from aitbc_operator.postgres.manager import state_from_row
from aitbc_operator.postgres.plan import DesiredDatabase, PasswordAction, plan
from aitbc_operator.postgres.scram import scram_sha256_verifier
from aitbc_operator.postgres.statements import DATABASE_SIZE, OBSERVE, statement


@dataclass(frozen=True)
class FloorResult:
    """What the floor run did and how long it took."""

    databases: int
    statements: int
    ddl: int
    seconds: float

    @property
    def per_database_ms(self) -> float:
        """Mean wall time per database, in milliseconds."""
        return 1000.0 * self.seconds / self.databases if self.databases else 0.0


def create_floor(conninfo: str, wanted: Sequence[DesiredDatabase], *, password: str) -> FloorResult:
    """Create every database of ``wanted`` (none may exist yet) with the reconciler's exact statements."""
    statements = ddl = 0
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for desired in wanted:
            row = conn.execute(OBSERVE, {"role": desired.role, "database": desired.database}).fetchone()
            assert row is not None
            statements += 1
            state = state_from_row(row, desired)
            if state.role is not None or state.database is not None:
                raise RuntimeError(f"{desired.role} or {desired.database} exists: the floor measures creation only")
            steps = plan(state, desired, password=PasswordAction.KEEP)
            verifier = scram_sha256_verifier(conn, desired.role, password)
            for step in steps:
                conn.execute(statement(step, desired, verifier))
            statements += len(steps)
            ddl += len(steps)
            conn.execute(DATABASE_SIZE, (desired.database,)).fetchone()
            statements += 1
    return FloorResult(len(wanted), statements, ddl, time.perf_counter() - started)
