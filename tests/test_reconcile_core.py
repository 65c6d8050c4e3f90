"""Reconciliation's core: per-key-range digests computed inside the source equal those computed from the lake,
and where they differ, the rows that differ come back as the extract would have written them.

"The lake" here is what `changed_rows` produced (every row, or the rows of some earlier moment), so these tests
hold the extract's own output against the source, on real PostgreSQL, through the role that may only SELECT.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime

import pg8000.native
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from lambdas.common.db import connect
from lambdas.common.digest import (
    DEFAULT_CONTENT_EVERY,
    WHOLE_TABLE_ROWS,
    ContentShare,
    LedgerMismatch,
    RangeFigures,
    differing_ranges,
    unique_keys,
)
from lambdas.common.errors import PipelineError
from lambdas.common.tables import PRIMARY_KEYS, SOURCE_TABLES
from lambdas.extract.ledger import latest_rows, ledger, ledger_figures
from lambdas.extract.reconcile import (
    Reconciliation,
    lake_digests,
    range_intervals,
    reconcile,
    reconcile_ledger,
    source_digests,
)
from lambdas.extract.source import Column, arrow_schema, changed_rows, snapshot, table_columns
from lambdas.extract.source_ranges import source_figures
from statemachine.local.postgres import READER_ROLE, grant_read_only
from tests.conftest import Databases
from tests.sources import T0, insert

RANGE = 4  # small ranges, so the small test tables span several


@contextmanager
def reader(databases: Databases) -> Iterator[pg8000.native.Connection]:
    """The pipeline's view of the source: a role that may only SELECT, inside one read-only snapshot."""
    con = connect(databases.source)
    try:
        grant_read_only(con, READER_ROLE)
    finally:
        con.close()
    con = connect({**databases.source, "username": READER_ROLE})
    try:
        with snapshot(con):
            yield con
    finally:
        con.close()


def lake_of(databases: Databases, table: str) -> pa.Table:
    """What a full extract of the table writes to the lake now."""
    with reader(databases) as con:
        columns = table_columns(con, table)
        with changed_rows(con, table, columns, None) as batches:
            return pa.Table.from_batches(list(batches), schema=arrow_schema(columns))


def reconciled(databases: Databases, table: str, lake: pa.Table, share: ContentShare | None = None) -> Reconciliation:
    with reader(databases) as con:
        columns = table_columns(con, table)
        return reconcile(con, table, columns, PRIMARY_KEYS.get(table, "id"), lake, range_size=RANGE, share=share)


def digests(databases: Databases, table: str, lake: pa.Table, key: str) -> tuple[dict, dict]:
    with reader(databases) as con:
        columns = table_columns(con, table)
        return source_digests(con, table, columns, key, RANGE), lake_digests(lake, columns, key, RANGE)


def assert_no_drift(outcome: Reconciliation) -> None:
    assert outcome.result.as_dict() == {
        "table": outcome.result.table,
        "ranges_compared": outcome.result.ranges_compared,
        "ranges_differing": 0,
        "source_rows_read": 0,
        "rows_changed": 0,
        "rows_changed_quietly": 0,
        "rows_missing": 0,
        "rows_deleted": 0,
        "deleted_keys_sample": [],
        "content_share": {"every": 1, "turn": 0},
    }
    assert outcome.drift.rows.num_rows == 0


# --- an exact lake reconciles to nothing ----------------------------------------------------------------------


def test_the_source_and_an_exact_lake_of_the_sample_data_have_equal_digests_in_every_range(
    databases: Databases,
) -> None:
    databases.seed(scale=0.05)
    for table in SOURCE_TABLES:
        lake = lake_of(databases, table)
        source, from_lake = digests(databases, table, lake, PRIMARY_KEYS[table])
        assert source == from_lake, table
        assert sum(d.rows for d in source.values()) == lake.num_rows > 0, table
        outcome = reconciled(databases, table, lake)
        assert_no_drift(outcome)
        assert outcome.result.ranges_compared == len(source)


def test_the_awkward_source_and_an_exact_lake_have_equal_digests_so_nothing_drifts(awkward: Databases) -> None:
    for table in SOURCE_TABLES:
        lake = lake_of(awkward, table)
        source, from_lake = digests(awkward, table, lake, PRIMARY_KEYS[table])
        assert source == from_lake, table
        assert_no_drift(reconciled(awkward, table, lake))
    assert lake_of(awkward, "purchase_order").num_rows == 0  # the empty table took part too


def test_a_lake_holding_older_versions_before_the_latest_one_still_reconciles(awkward: Databases) -> None:
    before = lake_of(awkward, "staff")
    awkward.source_sql("UPDATE staff SET first_name = first_name || '!', last_updated = now() WHERE staff_id <= 3")
    after = lake_of(awkward, "staff")
    assert_no_drift(reconciled(awkward, "staff", pa.concat_tables([before, after])))
    # the order of observation decides which version is the lake's: the old one last means drift, and the
    # source's versions are newer ones (their last_updated moved), not quiet changes
    stale = reconciled(awkward, "staff", pa.concat_tables([after, before]))
    assert (stale.result.rows_changed, stale.result.rows_changed_quietly) == (3, 0)
    assert stale.drift.rows["staff_id"].to_pylist() == [1, 2, 3]


# --- what drift is found, and how it comes back -----------------------------------------------------------------


def test_an_update_that_leaves_last_updated_alone_is_found_in_one_range_and_comes_back_as_one_changed_row(
    awkward: Databases,
) -> None:
    lake = lake_of(awkward, "design")
    awkward.source_sql("UPDATE design SET file_location = '/moved, \"quietly\"' WHERE design_id = 6")

    outcome = reconciled(awkward, "design", lake)

    assert outcome.result.ranges_differing == 1
    assert outcome.result.source_rows_read == RANGE  # only design_id 4..7 was re-read
    assert (outcome.result.rows_changed, outcome.result.rows_missing, outcome.result.rows_deleted) == (1, 0, 0)
    assert outcome.drift.quiet_keys.to_pylist() == [6]  # same last_updated: a fact would not take it as new
    assert outcome.drift.rows.schema == lake.schema  # ready to be written as an ingestion batch
    changed = outcome.drift.rows.to_pylist()
    assert [(r["design_id"], r["file_location"], r["last_updated"]) for r in changed] == [(6, '/moved, "quietly"', T0)]


def test_a_row_deleted_upstream_is_reported_by_its_key_and_nothing_is_re_extracted(awkward: Databases) -> None:
    lake = lake_of(awkward, "payment")
    awkward.source_sql("DELETE FROM payment WHERE payment_id = 5")

    outcome = reconciled(awkward, "payment", lake)

    assert outcome.drift.deleted_keys.to_pylist() == [5]
    assert outcome.result.rows_deleted == 1
    assert outcome.result.as_dict()["deleted_keys_sample"] == [5]
    assert outcome.drift.rows.num_rows == 0


def test_a_whole_range_deleted_upstream_exists_only_in_the_lake_and_is_reported(awkward: Databases) -> None:
    lake = lake_of(awkward, "payment")
    awkward.source_sql("DELETE FROM payment WHERE payment_id BETWEEN 4 AND 6")

    outcome = reconciled(awkward, "payment", lake)

    assert outcome.result.ranges_differing == 1  # keys 4..7: in the lake only
    assert outcome.result.source_rows_read == 0
    assert outcome.drift.deleted_keys.to_pylist() == [4, 5, 6]


def test_a_row_inserted_with_an_old_last_updated_is_missing_from_the_lake_and_comes_back(awkward: Databases) -> None:
    lake = lake_of(awkward, "currency")
    con = awkward.source_con()
    try:
        insert(con, "currency", {"currency_id": 40, "currency_code": "CHF", "created_at": T0, "last_updated": T0})
    finally:
        con.close()

    outcome = reconciled(awkward, "currency", lake)

    assert (outcome.result.rows_changed, outcome.result.rows_missing, outcome.result.rows_deleted) == (0, 1, 0)
    assert outcome.drift.rows.to_pylist() == [
        {"currency_id": 40, "currency_code": "CHF", "created_at": T0, "last_updated": T0}
    ]


def test_a_lake_that_lost_its_state_gets_every_row_it_lacks_back_and_no_other(awkward: Databases) -> None:
    lake = lake_of(awkward, "address").slice(0, 3)  # address_id 1..3 only

    outcome = reconciled(awkward, "address", lake)

    assert outcome.result.rows_missing == 5
    assert outcome.drift.rows["address_id"].to_pylist() == [4, 5, 6, 7, 8]


def test_the_drift_written_as_the_next_batch_leaves_only_the_deletions_to_report(awkward: Databases) -> None:
    lake = lake_of(awkward, "payment")
    awkward.source_sql("UPDATE payment SET paid = NOT paid WHERE payment_id = 1")
    awkward.source_sql("UPDATE payment SET payment_amount = 7, last_updated = now() WHERE payment_id = 2")
    awkward.source_sql("DELETE FROM payment WHERE payment_id = 6")
    awkward.source_sql(
        "INSERT INTO payment SELECT 9, created_at, last_updated, transaction_id, counterparty_id, payment_amount, "
        "currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number "
        "FROM payment WHERE payment_id = 3"
    )
    first = reconciled(awkward, "payment", lake)
    assert (first.result.rows_changed, first.result.rows_changed_quietly) == (2, 1)
    assert (first.result.rows_missing, first.result.rows_deleted) == (1, 1)

    second = reconciled(awkward, "payment", pa.concat_tables([lake, first.drift.rows]))

    assert second.drift.rows.num_rows == 0
    assert second.drift.deleted_keys.to_pylist() == [6]  # the lake keeps what it took; the key is reported


def test_an_empty_lake_gets_every_source_row_back_as_missing(awkward: Databases) -> None:
    outcome = reconciled(awkward, "address", pa.table({}))

    assert (outcome.result.rows_missing, outcome.result.ranges_differing) == (8, 3)
    assert outcome.drift.rows.to_pylist() == lake_of(awkward, "address").to_pylist()


def test_null_becoming_the_empty_string_and_back_is_drift(awkward: Databases) -> None:
    lake = lake_of(awkward, "address")
    awkward.source_sql("UPDATE address SET address_line_2 = '' WHERE address_id = 1")  # was NULL
    awkward.source_sql("UPDATE address SET district = NULL WHERE address_id = 3")  # was ''

    outcome = reconciled(awkward, "address", lake)

    assert outcome.result.rows_changed == 2
    assert {r["address_id"]: (r["address_line_2"], r["district"]) for r in outcome.drift.rows.to_pylist()} == {
        1: ("", None),
        3: (None, None),
    }


def test_a_changed_numeric_that_parses_to_the_same_number_is_drift(awkward: Databases) -> None:
    lake = lake_of(awkward, "sales_order")
    awkward.source_sql("UPDATE sales_order SET unit_price = 3.00 WHERE sales_order_id = 1")  # '3' -> '3.00'

    outcome = reconciled(awkward, "sales_order", lake)

    assert outcome.drift.rows.to_pylist()[0]["unit_price"] == "3.00"


# --- every type the lake stores ---------------------------------------------------------------------------------

TYPED_TABLE = """
CREATE TABLE typed (
    id int8 PRIMARY KEY, small int2, big int8, f8 float8, f4 float4, amount numeric, flag bool, day date,
    moment timestamp, zoned timestamptz, label text, last_updated timestamp NOT NULL
)
"""
# floats as PostgreSQL reads them: extremes, denormals, -0, infinities, NaN, and values with no short decimal
TYPED_ROWS = [
    (-9, -32768, -(2**63), "0.1", "0.1", "-0.000000000000000000001", False, "0001-01-01", "1900-01-01 00:00:00.000001"),
    (-1, 32767, 2**63 - 1, "-0", "-0", "123456789012345678901234567890.123456789", True, "1969-12-31",
     "1969-12-31 23:59:59.999999"),
    (0, 0, 0, "1e15", "1e15", "NaN", None, "1970-01-01", "1970-01-01 00:00:00"),
    (1, None, None, "5e-324", "1.4e-45", "Infinity", True, "2024-02-29", "2024-02-29 12:34:56.5"),
    (2, 1, 1, "1.7976931348623157e308", "3.4028235e38", "-Infinity", False, "9999-12-31", "9999-12-31 23:59:59.999999"),
    (3, 2, 2, "Infinity", "-Infinity", "0.10", True, None, None),
    (4, 3, 3, "NaN", "NaN", "1e-7", False, "2000-01-01", "2000-01-01 00:00:00.1"),
    (5, 4, 4, None, None, None, None, None, None),
    (7, 5, 5, "0.6666666666666666", "0.6666667", "2.5", True, "2023-03-05", "2023-03-01 09:30:15.123"),
]  # fmt: skip
LABELS = ["", None, 'Zoë\n"x",y', "-", "3:abc", "é" * 40]  # NULL and '', and texts that mimic the encoding


def typed_source(databases: Databases) -> None:
    con = databases.source_con()
    try:
        con.run(TYPED_TABLE)
        for n, (key, small, big, f8, f4, amount, flag, day, moment) in enumerate(TYPED_ROWS):
            con.run(
                "INSERT INTO typed VALUES (:key, :small, :big, CAST(:f8 AS float8), CAST(:f4 AS float4), "
                "CAST(:amount AS numeric), :flag, CAST(:day AS date), CAST(:moment AS timestamp), "
                "CAST(:moment AS timestamptz), :label, :stamp)",
                key=key, small=small, big=big, f8=f8, f4=f4, amount=amount, flag=flag, day=day, moment=moment,
                label=LABELS[n % len(LABELS)], stamp=T0,
            )  # fmt: skip
    finally:
        con.close()


def test_every_type_the_lake_stores_digests_identically_on_both_sides(databases: Databases) -> None:
    typed_source(databases)
    lake = lake_of(databases, "typed")
    assert [f.type for f in lake.schema] == [
        pa.int64(), pa.int16(), pa.int64(), pa.float64(), pa.float32(), pa.string(), pa.bool_(), pa.date32(),
        pa.timestamp("us"), pa.string(), pa.string(), pa.timestamp("us"),
    ]  # fmt: skip

    source, from_lake = digests(databases, "typed", lake, "id")

    assert source == from_lake
    assert sorted(source) == [-2, 0, 1]  # -9 | -3..3 (truncating division) | 4..7, at 4 keys a range
    assert_no_drift(reconciled(databases, "typed", lake))


# (key, change, column, the value the re-read row must carry): each one step away from what the lake holds
ONE_STEP_CHANGES = [
    (-9, "f8 = CAST('0.10000000000000002' AS float8)", "f8", 0.10000000000000002),  # the next float8 after 0.1
    (-1, "f8 = 0", "f8", 0.0),  # -0 -> 0
    (-1, "f4 = 0", "f4", 0.0),
    (1, "f8 = 'NaN'", "f8", math.nan),
    (-9, "amount = CAST('-0.0000000000000000000010' AS numeric)", "amount", "-0.0000000000000000000010"),
    (-1, "moment = moment + interval '1 microsecond'", "moment", datetime(1970, 1, 1)),
    (-9, "day = CAST('0001-01-02' AS date)", "day", date(1, 1, 2)),
    (-9, "flag = true", "flag", True),
    (-1, "zoned = zoned + interval '1 microsecond'", "zoned", None),  # its text depends on TimeZone
    (-1, "label = ''", "label", ""),  # NULL -> ''
    (-9, "label = NULL", "label", None),  # '' -> NULL
    (1, "label = NULL", "label", None),  # the text '-' -> NULL
    (2, "label = '3:' || 'abd'", "label", "3:abd"),
    (2, "big = big - 1", "big", 0),
    (0, "small = NULL", "small", None),
]


def test_a_one_step_change_of_any_type_is_found_and_re_read_with_its_new_value(databases: Databases) -> None:
    for key, change, column, value in ONE_STEP_CHANGES:
        databases.source_sql("DROP TABLE IF EXISTS typed")
        typed_source(databases)
        lake = lake_of(databases, "typed")
        databases.source_sql(f"UPDATE typed SET {change} WHERE id = :key", key=key)

        outcome = reconciled(databases, "typed", lake)

        assert (outcome.result.ranges_differing, outcome.result.rows_changed) == (1, 1), change
        [row] = outcome.drift.rows.to_pylist()
        assert row["id"] == key, change
        if column == "zoned":
            assert row[column] != lake.filter(pc.equal(lake["id"], key))[column][0].as_py(), change
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(row[column]), change
        else:
            assert row[column] == value, change
            if isinstance(value, float):
                assert math.copysign(1, row[column]) == 1, change  # 0, not -0


def test_the_same_float4_stored_again_from_a_float8_is_no_change(databases: Databases) -> None:
    typed_source(databases)
    lake = lake_of(databases, "typed")
    databases.source_sql("UPDATE typed SET f4 = CAST('0.1' AS float8) WHERE id = -9")
    assert_no_drift(reconciled(databases, "typed", lake))


# --- small rules ----------------------------------------------------------------------------------------------


def test_range_intervals_cover_exactly_the_keys_that_integer_division_puts_in_those_ranges() -> None:
    for ranges in ([0], [-2, -1, 0, 1, 2], [3, 5, 6], [-3, 3]):
        intervals = range_intervals(ranges, 3)
        covered = sorted(k for low, high in intervals for k in range(low, high + 1))
        expected = sorted(k for k in range(-40, 40) if int(k / 3) in ranges)  # truncating division
        assert covered == expected, ranges
    assert range_intervals([1, 2, 4], 10) == ((10, 29), (40, 49))
    assert range_intervals([], 10) == ()


def test_ranges_on_one_side_only_or_with_another_count_or_digest_differ() -> None:
    same = RangeFigures(3, (6, 9), 99)
    source = {0: same, 1: RangeFigures(3, (6, 9), 100), 2: RangeFigures(2, (6, 9), 5), 4: same, 5: same, 6: same}
    lake = {0: same, 1: RangeFigures(3, (6, 9), 101), 2: RangeFigures(3, (6, 9), 5), 3: same, 4: same,
            5: RangeFigures(3, (7, 9), 99), 6: RangeFigures(3, (6, 8), None)}  # fmt: skip
    assert differing_ranges(source, lake) == [1, 2, 3, 5, 6]


def test_a_table_without_an_integer_key_or_with_a_nonsense_range_size_is_refused(databases: Databases) -> None:
    typed_source(databases)
    with reader(databases) as con:
        columns = table_columns(con, "typed")
        with pytest.raises(PipelineError, match="typed: key 'label' is text; ranges need an integer key"):
            source_digests(con, "typed", columns, "label", 10)
        with pytest.raises(PipelineError, match="typed: primary key column 'nope' is missing"):
            source_digests(con, "typed", columns, "nope", 10)
    with pytest.raises(ValueError, match="range_size must be a positive number of keys, not 0"):
        lake_digests(pa.table({"id": [1]}), [Column("id", "int4")], "id", 0)


# --- the two tiers: the census every time, the content digest for a rotating share ------------------------------


def share_leaving_out(*keys: int) -> ContentShare:
    """A content share of 7 that leaves the ranges of these keys out: only the census looks at them."""
    taken = {int(k / RANGE) % 7 for k in keys}
    return ContentShare(7, next(t for t in range(7) if t not in taken))


def test_the_census_alone_finds_lost_inserted_and_deleted_rows_and_a_missed_update(awkward: Databases) -> None:
    lake = lake_of(awkward, "payment").filter(pc.not_equal(pc.field("payment_id"), 1))  # the lake lost key 1
    awkward.source_sql("UPDATE payment SET payment_amount = 7, last_updated = now() WHERE payment_id = 2")
    awkward.source_sql("DELETE FROM payment WHERE payment_id = 5")
    awkward.source_sql(
        "INSERT INTO payment SELECT 9, created_at, last_updated, transaction_id, counterparty_id, payment_amount, "
        "currency_id, payment_type_id, paid, payment_date, company_ac_number, counterparty_ac_number "
        "FROM payment WHERE payment_id = 3"
    )  # an old last_updated, which no watermark would take
    share = share_leaving_out(1, 2, 5, 9)

    outcome = reconciled(awkward, "payment", lake, share)

    assert outcome.result.as_dict()["content_share"] == {"every": 7, "turn": share.turn}
    assert (outcome.result.rows_changed, outcome.result.rows_missing, outcome.result.rows_deleted) == (1, 2, 1)
    assert outcome.drift.rows["payment_id"].to_pylist() == [1, 2, 9]
    assert outcome.drift.deleted_keys.to_pylist() == [5]


def test_a_quiet_change_is_found_on_the_turn_its_range_is_in_the_share_and_on_no_other(awkward: Databases) -> None:
    lake = lake_of(awkward, "design")
    awkward.source_sql("UPDATE design SET file_location = '/moved' WHERE design_id = 6")  # range 1 at 4 keys a range

    found = {turn: reconciled(awkward, "design", lake, ContentShare(7, turn)).result for turn in range(7)}

    assert {turn: r.rows_changed_quietly for turn, r in found.items() if r.ranges_differing} == {1: 1}
    assert all(r.ranges_compared == found[0].ranges_compared for r in found.values())  # the census saw them all


def test_both_sides_take_the_same_share_of_negative_and_positive_ranges(databases: Databases) -> None:
    typed_source(databases)
    lake = lake_of(databases, "typed")
    with reader(databases) as con:
        columns = table_columns(con, "typed")
        entries = ledger(latest_rows(lake, columns, "id"), columns, "id", seq=1)
        for turn in range(3):
            share = ContentShare(3, turn)
            source = source_figures(con, "typed", columns, "id", RANGE, share)
            assert source == ledger_figures(entries, RANGE, share), turn
            assert sorted(r for r, f in source.items() if f.digest is not None) == [
                r for r in (-2, 0, 1) if r % 3 == turn
            ], turn


def test_a_small_table_is_digested_whole_every_time_and_a_large_one_in_turns() -> None:
    assert ContentShare.rotating(WHOLE_TABLE_ROWS - 1, 12) == ContentShare()
    assert [ContentShare.rotating(WHOLE_TABLE_ROWS, n).turn for n in range(9)] == [0, 1, 2, 3, 4, 5, 6, 0, 1]
    assert ContentShare.rotating(10**6, 3).every == DEFAULT_CONTENT_EVERY == 7
    with pytest.raises(ValueError, match="a content share needs"):
        ContentShare(7, 7)


def test_a_ledger_from_the_base_hashes_only_the_ranges_it_compares_and_reads_them_from_the_batch_it_names(
    awkward: Databases,
) -> None:
    lake = lake_of(awkward, "payment")
    awkward.source_sql("DELETE FROM payment WHERE payment_id = 5")  # a census difference outside the share
    read: list[int] = []

    def batch_rows(seq: int) -> pa.Table:
        read.append(seq)
        return lake

    share = share_leaving_out(5)
    with reader(awkward) as con:
        columns = table_columns(con, "payment")
        entries = ledger(lake, columns, "payment_id", seq=3, share=None)
        outcome = reconcile_ledger(con, "payment", columns, "payment_id", entries, range_size=RANGE, share=share,
                                   batch_rows=batch_rows)  # fmt: skip

    assert read == [3]  # one read of the batch the entries name
    numbers = [int(k / RANGE) for k in outcome.entries["key"].to_pylist()]
    hashed = {n for n, h in zip(numbers, outcome.entries["hash"].to_pylist(), strict=True) if h is not None}
    assert hashed == {n for n in numbers if n % 7 == share.turn} | {int(5 / RANGE)}
    assert outcome.drift.deleted_keys.to_pylist() == [5]
    assert outcome.result.ranges_differing == 1
    with pytest.raises(LedgerMismatch, match="not in the batches their ledger names"), reader(awkward) as con:
        reconcile_ledger(con, "payment", columns, "payment_id", entries, range_size=RANGE, share=share,
                         batch_rows=lambda seq: lake.slice(0, 2))  # fmt: skip


def test_keys_are_unique_when_their_ascending_runs_do_not_overlap_and_otherwise_counted() -> None:
    cases = {(1, 2, 3): True, (3, 2, 1): True, (1, 2, 2): False, (5, 6, 1, 2, 7): True, (5, 6, 1, 5, 7): False,
             (1, 3, 2, 4): True, (2, 1, 2): False, (): True, tuple(range(200, 0, -1)): True}  # fmt: skip
    for keys, unique in cases.items():
        assert unique_keys(pa.array(keys, pa.int64())) is unique, keys
    assert unique_keys(pa.chunked_array([[1, 2], [3, 4], [2]], pa.int64())) is False
