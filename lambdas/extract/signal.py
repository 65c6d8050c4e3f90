"""A cheap change signal, so that a run in which a table did not change does not scan it.

totesys has no index on `last_updated`, so the window's `last_updated >= since` is a sequential scan of the
whole table even when it finds nothing. PostgreSQL's cumulative statistics count, per table, the rows every
transaction inserted, updated and deleted (`pg_stat_all_tables.n_tup_ins/upd/del`, readable by a role that may
only SELECT, no index and no write needed). The *token* is those counters plus everything that makes two
readings comparable: the table's oid and relfilenode (a table dropped and recreated, or TRUNCATEd, which moves
no counter), the database's `stats_reset` (`pg_stat_reset()` and, since PostgreSQL 15, also
`pg_stat_reset_single_table_counters()` stamp it), `pg_stat_bgwriter.stats_reset` (a crash restart discards
every counter and stamps the fixed-size statistics, not the database's), the postmaster's start time (a restart
or a failover), and whether counting is on at all (`track_counts`; a standby does not count the changes it
replays, so a server in recovery is never trusted either). A token that is not trustworthy is never equal.

Why a skip never loses a change (the order is the argument):
1. The token is read in its own statement, BEFORE the scan's snapshot is taken. A transaction's counts reach
   the shared statistics only after it has ended and become visible (PostgreSQL adds them at end of
   transaction and flushes them when the session is idle), so every change the token counts is visible to the
   scan's snapshot, and is extracted by it.
2. Within one comparable token (same relation, same reset epoch, same server life) the counters only grow
   (a rolled-back insert counts too: a harmless extra scan).
   A later token equal to the stored one therefore means that no counted change reached the statistics since
   the stored token was read: every change they count was already in the scan that stored it.
3. A change not counted yet makes the token stale, not wrong. A session flushes its counts when it goes idle
   outside a transaction, but not more often than once a second: otherwise after 10 s idle
   (PGSTAT_IDLE_INTERVAL), or when it disconnects; never while it sits inside a transaction, so a session that
   commits and at once opens its next transaction keeps the count until it idles or ends. Meanwhile a run may
   skip, but a skip does not move the watermark, so the first run whose counters moved (or the forced scan of
   point 4, or a run told to ignore the signal) reads the window from the same watermark and finds the change.
   It is delayed, never lost.
4. A change never counted (a superuser session with `SET track_counts = off`, or anything else that bypasses
   the counters) is a signal that lies. Only a scan finds it, so a scan is forced when the last one is older
   than `max_age` (EXTRACT_SIGNAL_MAX_AGE_SECONDS): such a change waits at most max_age plus one schedule
   interval. The nightly reconciliation compares whole tables and is the net below that.

The token also carries a digest of the head's state it was stored with, so a head whose watermark or seen
versions were edited no longer matches it and the scan (with every check of the window) runs again.

Age is measured with the source's clock (`now()` of the token's own statement), not the Lambda's: the token,
the watermark and the rows are all the source's, the existing checks already trust that clock (the watermark
may not be later than it), and a restart, the usual moment for a clock to be reset, changes the token anyway.
A clock that went back would stretch the bound, so an age that is negative forces a scan too; a clock that
jumps ahead only forces an early scan.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import pg8000.native

from lambdas.common.errors import PipelineError
from lambdas.common.settings import ExtractTuning

SIGNAL = "signal"  # the key of the token in the extract head's state
MAX_AGE_ENV = ExtractTuning.variable("signal_max_age_seconds")
DEFAULT_MAX_AGE_SECONDS = ExtractTuning.default("signal_max_age_seconds")

# One statement, so every field is read at one moment; the statistics are those of the statement's own
# (autocommit) transaction, never a snapshot cached earlier in the session.
_SIGNAL_SQL = """
SELECT c.oid::int8, c.relfilenode::int8, s.n_tup_ins, s.n_tup_upd, s.n_tup_del,
       d.stats_reset, (SELECT b.stats_reset FROM pg_catalog.pg_stat_bgwriter b),
       pg_catalog.pg_postmaster_start_time(), pg_catalog.current_setting('track_counts')::bool,
       pg_catalog.pg_is_in_recovery(), now(), localtimestamp,
       pg_catalog.has_table_privilege(c.oid, 'SELECT'), pg_catalog.quote_ident(c.relname),
       pg_catalog.quote_ident(current_user),
       ARRAY(SELECT pg_catalog.quote_ident(a.attname) FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
               AND NOT pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT') ORDER BY a.attnum),
       (SELECT count(*) FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_stat_all_tables s ON s.relid = c.oid
JOIN pg_catalog.pg_stat_database d ON d.datname = pg_catalog.current_database()
WHERE c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident(:table))
"""


class MissingPrivilegeError(PipelineError):
    """The pipeline's role may not read the table (or some of its columns): the message names the GRANT that is
    missing. Raised whether or not the table changed, so a revoked grant fails the next run, not the next change."""


@dataclass(frozen=True)
class Counters:
    """What must be equal for two readings to say the table did not change between them."""

    table_oid: int
    filenode: int
    inserted: int
    updated: int
    deleted: int
    database_reset: str | None
    server_reset: str | None
    server_started: str
    # track_counts is on and the server is not a standby (which does not count the changes it replays). Part of
    # the comparison: a token stored while nothing was counted proves nothing about what happened after it.
    counting: bool


@dataclass(frozen=True)
class Token:
    counters: Counters
    read_at: datetime  # the source's now() when read (timestamptz)
    clock: datetime  # the source's localtimestamp, in the type of last_updated (for the watermark check)

    def stored(self, state: dict[str, Any]) -> dict[str, Any]:
        """The token as the head keeps it, bound to the state it is stored with."""
        return {"counters": asdict(self.counters), "read_at": self.read_at.isoformat(), "state": state_digest(state)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def read_token(con: pg8000.native.Connection, table: str) -> Token | None:
    """The table's token now; None when the table is not there (the scan then fails naming it).

    Call it outside (and before) the scan's snapshot: see the module docstring for why the order matters.
    """
    rows = con.run(_SIGNAL_SQL, table=table)
    if not rows:
        return None
    oid, filenode, ins, upd, dele, db_reset, server_reset, started, track_counts, recovery, now, clock = rows[0][:12]
    check_privileges(*rows[0][12:])
    counters = Counters(int(oid), int(filenode), int(ins), int(upd), int(dele), _iso(db_reset),
                        _iso(server_reset), started.isoformat(), bool(track_counts) and not recovery)  # fmt: skip
    return Token(counters, now, clock)


def check_privileges(whole_table: bool, table: str, role: str, denied: list[str], columns: int) -> None:
    """Refuse a table the role may not read, naming the grant to give (identifiers as PostgreSQL quotes them).

    Read with the token, in its statement, because a table the signal says is unchanged is not read at all:
    without this, a revoked SELECT would show only at the table's next change. Column privileges count: a role
    that may read every column reads the table as the extract does (its COPY names the columns); one that may
    read some is told the columns it lacks.
    """
    if whole_table or not denied:
        return
    target = f"({', '.join(denied)}) ON {table}" if len(denied) < columns else f"ON {table}"
    raise MissingPrivilegeError(f"permission denied for table {table}: GRANT SELECT {target} TO {role}")


def state_digest(state: dict[str, Any]) -> str:
    """A digest of the head's state other than the token itself."""
    rest = {k: v for k, v in state.items() if k != SIGNAL}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def unchanged(state: dict[str, Any], token: Token | None, max_age: timedelta) -> bool:
    """True only when the stored token proves the table unchanged since the last scan, and that scan is recent.

    Anything else (no token, an unreadable one, a head edited since, counting off, a reset, a restart, a
    scan too old or from the future) is "could not tell", and the answer to that is a scan.
    """
    if token is None or not token.counters.counting or max_age <= timedelta(0):
        return False
    stored = state.get(SIGNAL)
    if not isinstance(stored, dict) or stored.get("state") != state_digest(state):
        return False
    if stored.get("counters") != asdict(token.counters):
        return False
    try:
        read_at = datetime.fromisoformat(stored["read_at"])
        age = token.read_at - read_at
    except (KeyError, TypeError, ValueError):
        return False
    return timedelta(0) <= age < max_age
