"""Deterministic, realistic sample data for the totesys source database.

The local runner needs a totesys to extract from, and production is out of reach, so this module builds one:
the schema from the contract (`totesys_source.sql`, a byte-for-byte copy of the shared reference) and rows
shaped like production (README "Production facts"): about 500 sales orders a month from 2022-11-03 for 22
months, created 08:00-19:00 with millisecond timestamps, in batches of up to five rows sharing a timestamp,
some rows updated later, agreed dates as 'YYYY-MM-DD' text, a few NULLs and awkward names.

Everything is drawn from one `random.Random(seed)` and every timestamp is computed from a fixed base, never
from the clock, so the same seed always gives the same rows; tests and benchmarks can then compare runs.
Rows reach PostgreSQL through one `COPY ... FROM STDIN` per table, streamed in chunks from spool files, so
`scale=100` (about 1.6 million order rows) stays fast and memory stays bounded.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import random
import re
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import pg8000.native
from pg8000.native import identifier

__all__ = ["SCHEMA_PATH", "create_schema", "is_seeded", "seed"]

SCHEMA_PATH = Path(__file__).with_name("totesys_source.sql")

# Every table of the contract, in an order in which foreign keys hold while loading.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "address": (
        "address_id", "address_line_1", "address_line_2", "district", "city", "postal_code", "country",
        "phone", "created_at", "last_updated",
    ),
    "department": ("department_id", "department_name", "location", "manager", "created_at", "last_updated"),
    "currency": ("currency_id", "currency_code", "created_at", "last_updated"),
    "payment_type": ("payment_type_id", "payment_type_name", "created_at", "last_updated"),
    "counterparty": (
        "counterparty_id", "counterparty_legal_name", "legal_address_id", "commercial_contact",
        "delivery_contact", "created_at", "last_updated",
    ),
    "staff": (
        "staff_id", "first_name", "last_name", "department_id", "email_address", "created_at", "last_updated",
    ),
    "design": ("design_id", "created_at", "design_name", "file_location", "file_name", "last_updated"),
    "sales_order": (
        "sales_order_id", "created_at", "last_updated", "design_id", "staff_id", "counterparty_id",
        "units_sold", "unit_price", "currency_id", "agreed_delivery_date", "agreed_payment_date",
        "agreed_delivery_location_id",
    ),
    "purchase_order": (
        "purchase_order_id", "created_at", "last_updated", "staff_id", "counterparty_id", "item_code",
        "item_quantity", "item_unit_price", "currency_id", "agreed_delivery_date", "agreed_payment_date",
        "agreed_delivery_location_id",
    ),
    "transaction": (
        "transaction_id", "transaction_type", "sales_order_id", "purchase_order_id", "created_at",
        "last_updated",
    ),
    "payment": (
        "payment_id", "created_at", "last_updated", "transaction_id", "counterparty_id", "payment_amount",
        "currency_id", "payment_type_id", "paid", "payment_date", "company_ac_number",
        "counterparty_ac_number",
    ),
}  # fmt: skip
_PRISMA_TABLE = "_prisma_migrations"
_ALL_TABLES = (*_COLUMNS, _PRISMA_TABLE)

# Volumes at scale 1 (November 2024 snapshots). Only the growing tables scale; the small ones are fixed.
_SALES_ORDERS = 11_200
_PURCHASE_ORDERS = 4_600
_DESIGNS = 470
_ADDRESSES = 30
_COUNTERPARTIES = 20
_STAFF = 20
_CURRENCIES = ("GBP", "USD", "EUR")
# ids 1-4 in this order; a sale is paid with 1 or refunded with 2, a purchase with 3 or 4.
_PAYMENT_TYPES = ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")

# Time: every timestamp is milliseconds after midnight of the first day; nothing reads the clock.
_FIRST_DAY = dt.date(2022, 11, 3)
_EPOCH = dt.datetime(2022, 11, 3)
_DAYS = 670  # 2022-11-03 .. 2024-09-03, about 22 months
_DAY_MS = 86_400_000
_OPEN_MS = 8 * 3_600_000  # the application inserts between 08:00 and 19:00
_CLOSE_MS = 19 * 3_600_000
_LAST_MS = (_DAYS - 1) * _DAY_MS + _CLOSE_MS
# Agreed dates may lie beyond the last day of data, so the date table runs on past it.
_DATES = tuple((_FIRST_DAY + dt.timedelta(days=n)).isoformat() for n in range(_DAYS + 64))

# Batch inserts: how many rows share one created_at (production shows up to five).
_BATCH_SIZES = (1, 2, 3, 4, 5)
_BATCH_CUM_WEIGHTS = (0.40, 0.60, 0.75, 0.88, 1.0)

_SPOOL_MEMORY_BYTES = 8 << 20  # per table; beyond this a spool moves to a temporary file
_FLUSH_ROWS = 4096
_COPY_CHUNK_BYTES = 1 << 20

_FIRST_NAMES = (
    "Jeremie", "Deron", "Jeanette", "Ana", "Magdalena", "Korey", "Raphael", "Oswaldo", "Brody", "Jazmyn",
    "Zoë", "Siobhán", "José", "Chloé", "Søren", "Niamh", "Imani", "Meera", "Yusuf", "Flavio",
)  # fmt: skip
_LAST_NAMES = (
    "Franey", "Bednar", "Satterfield", "Lind", "Zieme", "Hagenes", "Ondricka", "O'Connor", "O'Brien",
    "D'Amore", "Müller", "Núñez", "Kowalski", "Ní Bhriain", "Abshire", "Stiedemann", "Hansen", "Dubois",
    "Smith-Jones", "Fitzgerald",
)  # fmt: skip
_COUNTERPARTY_NAMES = (
    "Fahey and Sons", "Leannon, Predovic and Morar", "Armstrong Inc", "Kohler Inc",
    "Frami, Yundt and Macejkovic", "Mraz LLC", "Padberg, Lueilwitz and Johnson", "Grant - Lakin",
    "Price LLC", "Bosco, Abshire and Schowalter", "Jacobi Inc", "Hansen and Sons", "Yost, Watsica and Mann",
    "Strosin and Sons", "O'Keefe, Bergnaum and Mayer", "Müller & Söhne GmbH", "Zoë's \"Best\" Totes Ltd",
    "Société des Sacs SARL", "Kuhic-O'Reilly", "Beahan, Bosco and Schulist",
)  # fmt: skip
_DEPARTMENTS = (
    "Sales", "Purchasing", "Production", "Dispatch", "Finance", "Facilities", "Communications", "HR",
)  # fmt: skip
_DEPARTMENT_LOCATIONS = ("Manchester", "Leeds", "Sheffield", "Liverpool", "Newcastle", "Bradford")
_STREETS = (
    "Herzog Via", "Alexie Cliffs", "Sincere Fort", "Mraz Burgs", "Kertzmann Plaza", "Bogan Trail",
    "Cartwright Trace", "Jaskolski Squares", "St. Mary's Row", "Harbour Road", "Kings Lane", "Church Street",
    "Rue de l'Église", "Königstraße", "Calle Mayor", "Ul. Floriańska",
)  # fmt: skip
_LINE_2 = (
    "Flat 2, Rose Court", "Unit 14", "Suite 300", "Floor 3", "c/o O'Hara's Yard", "Apt. 71", "Building B",
    "Carroll Inlet", "Ledner Hollow",
)  # fmt: skip
# (city, district or None, country, postal-code pattern: A = letter, 9 = digit)
_CITIES = (
    ("Manchester", "Greater Manchester", "United Kingdom", "M9 9AA"),
    ("Leeds", "West Yorkshire", "United Kingdom", "LS9 9AA"),
    ("Bristol", "Avon", "United Kingdom", "BS99 9AA"),
    ("Glasgow", None, "United Kingdom", "G99 9AA"),
    ("Cardiff", "South Glamorgan", "United Kingdom", "CF99 9AA"),
    ("Belfast", "County Antrim", "United Kingdom", "BT9 9AA"),
    ("Dublin", "Leinster", "Ireland", "D99 A9A9"),
    ("Paris", "Île-de-France", "France", "99999"),
    ("Zürich", None, "Switzerland", "9999"),
    ("Málaga", "Andalucía", "Spain", "99999"),
    ("Kraków", "Małopolskie", "Poland", "99-999"),
    ("Köln", "Nordrhein-Westfalen", "Germany", "99999"),
    ("New York", "New York", "United States", "99999"),
    ("Austin", "Texas", "United States", "99999"),
    ("Toronto", "Ontario", "Canada", "A9A 9A9"),
)
_DESIGN_WORDS = (
    "Wooden", "Bronze", "Granite", "Steel", "Soft", "Cotton", "Plastic", "Rubber", "Frozen", "Concrete",
    "Metal", "Fresh", "Bespoke", "Fantastic", "Gorgeous", "Rustic", "Sleek", "Handcrafted", "Recycled",
    "Ergonomic", "Awesome", "Practical", "Tasty", "Licensed", "Refined", "Incredible", "Intelligent",
    "Generic",
)  # fmt: skip
_FILE_LOCATIONS = (
    "/usr/share", "/private", "/System", "/opt/include", "/home/user/dir", "/Users", "/usr/ports",
    "/usr/local/src", "/var/log", "/Library", "/root", "/lost+found",
)  # fmt: skip
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
_ITEM_CODE_CHARS = _UPPER + "0123456789"


# --- schema -------------------------------------------------------------------------------------------------


def create_schema(con: pg8000.native.Connection) -> None:
    """Create the 12 contract tables from `totesys_source.sql`, in one transaction.

    The file is the contract itself, so it is executed as written rather than restated in Python. Creating is
    all-or-nothing, and a schema that already has all 12 tables is left alone, so a runner may call this
    unconditionally; a schema with only some of them is an error (the transaction fails and rolls back).
    """
    if len(_existing_tables(con)) == len(_ALL_TABLES):
        return
    statements = split_sql(SCHEMA_PATH.read_text(encoding="utf-8"))

    def create() -> None:
        for statement in statements:
            con.run(statement)

    _in_transaction(con, create)


def split_sql(script: str) -> list[str]:
    """Split a SQL script into statements, dropping `--` and `/* */` comments first.

    Comments may contain semicolons (and quotes), so a naive `split(";")` would cut statements apart. Quoted
    strings and identifiers are kept whole, with `''`/`""` escapes. Dollar quoting and E'' backslash escapes
    are not understood; the contract uses neither.
    """
    statements: list[str] = []
    current: list[str] = []
    i, end = 0, len(script)
    while i < end:
        char = script[i]
        if script.startswith("--", i):
            newline = script.find("\n", i)
            i = end if newline < 0 else newline
        elif script.startswith("/*", i):
            close = script.find("*/", i + 2)
            if close < 0:
                raise ValueError("unterminated /* comment in SQL script")
            current.append(" ")
            i = close + 2
        elif char in "'\"":
            j = i + 1
            while True:
                j = script.find(char, j)
                if j < 0:
                    raise ValueError(f"unterminated {char} quote in SQL script")
                if script.startswith(char * 2, j):
                    j += 2
                    continue
                break
            current.append(script[i : j + 1])
            i = j + 1
        elif char == ";":
            statements.append("".join(current).strip())
            current = []
            i += 1
        else:
            current.append(char)
            i += 1
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


def is_seeded(con: pg8000.native.Connection) -> bool:
    """True when the contract's tables exist and hold sample data, so the runner knows to skip seeding.

    `seed` loads everything in one transaction, so a row in `sales_order` means every table was filled.
    """
    if len(_existing_tables(con)) != len(_ALL_TABLES):
        return False
    return bool(con.run("SELECT EXISTS (SELECT 1 FROM sales_order)")[0][0])


def _existing_tables(con: pg8000.native.Connection) -> set[str]:
    """Which contract tables are visible on the search path (where unqualified names in the SQL land)."""
    rows = con.run(
        "SELECT t FROM unnest(CAST(:tables AS text[])) AS t WHERE to_regclass(quote_ident(t)) IS NOT NULL",
        tables=list(_ALL_TABLES),
    )
    return {row[0] for row in rows}


# --- seeding ------------------------------------------------------------------------------------------------


def seed(con: pg8000.native.Connection, *, scale: float = 1.0, seed: int = 2022) -> dict[str, int]:
    """Fill the 11 business tables (and one `_prisma_migrations` row); return the rows loaded per table.

    `scale` multiplies the tables that grow in production (design, sales_order, purchase_order, transaction,
    payment) so benchmarks can load 100x; the reference tables keep production's sizes. The same `seed` and
    `scale` give identical rows, timestamps included. Everything loads in one transaction, and the serial
    sequences are moved past the loaded ids so later inserts by the application (or a test) get fresh ids.
    Refuses to load into tables that already hold rows, rather than colliding on primary keys halfway.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")
    missing = set(_ALL_TABLES) - _existing_tables(con)
    if missing:
        raise RuntimeError(f"totesys tables missing ({', '.join(sorted(missing))}); call create_schema first")
    filled = [t for t in _ALL_TABLES if con.run(f"SELECT EXISTS (SELECT 1 FROM {identifier(t)})")[0][0]]  # noqa: S608 - a contract table, quoted
    if filled:
        raise RuntimeError(f"totesys tables already hold rows ({', '.join(filled)}); seed needs empty tables")

    with contextlib.ExitStack() as files:
        spools = {
            table: _Spool(columns, files.enter_context(tempfile.SpooledTemporaryFile(_SPOOL_MEMORY_BYTES)))
            for table, columns in _COLUMNS.items()
        }
        builder = _Builder(random.Random(seed), scale, spools)  # noqa: S311 - reproducible sample data, not secrets
        builder.build()

        def load() -> None:
            # PostgreSQL checks foreign keys row by row during COPY (about 10 us per key per row, minutes at
            # scale 100); dropped for the load and re-added, each is validated by one join over the table.
            foreign_keys = con.run(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE contype = 'f' AND conrelid = ANY(CAST(:tables AS regclass[])) ORDER BY 1, 2",
                tables=list(_COLUMNS),
            )
            for table, name, _ in foreign_keys:  # table: regclass text, already a quoted SQL name
                con.run(f"ALTER TABLE {table} DROP CONSTRAINT {identifier(name)}")
            con.run(
                f"INSERT INTO {identifier(_PRISMA_TABLE)} (id, checksum, finished_at, migration_name, logs,"  # noqa: S608 - quoted name, bound values
                " rolled_back_at, started_at, applied_steps_count)"
                " VALUES (:id, :checksum, :finished_at, :name, NULL, NULL, :started_at, 1)",
                **builder.prisma_migration,
            )
            for table, spool in spools.items():
                columns = ", ".join(identifier(c) for c in spool.columns)
                con.run(f"COPY {identifier(table)} ({columns}) FROM STDIN WITH (FORMAT csv)", stream=spool.chunks())
                key = spool.columns[0]
                con.run(
                    f"SELECT setval(pg_get_serial_sequence(:table, :key), COALESCE(MAX({identifier(key)}), 0) + 1,"  # noqa: S608 - quoted names, bound values
                    f" false) FROM {identifier(table)}",
                    table=table,
                    key=key,
                )
            for table, name, definition in foreign_keys:
                con.run(f"ALTER TABLE {table} ADD CONSTRAINT {identifier(name)} {definition}")

        _in_transaction(con, load)
    counts = {table: spool.rows for table, spool in spools.items()}
    counts[_PRISMA_TABLE] = 1
    return counts


def _in_transaction(con: pg8000.native.Connection, work: Callable[[], object]) -> None:
    """Run `work()` between BEGIN and COMMIT, rolling back on any error, so nothing is left half-done."""
    con.run("START TRANSACTION")
    try:
        work()
    except BaseException:
        con.run("ROLLBACK")
        raise
    con.run("COMMIT")


class _Spool:
    """One table's rows as COPY CSV, in memory while small and in a temporary file beyond that.

    The whole data set is generated in one pass (orders, their transactions and payments together), but each
    table needs its own COPY; spooling keeps memory bounded at any scale.
    """

    def __init__(self, columns: tuple[str, ...], file: IO[bytes]) -> None:
        self.columns = columns
        self.rows = 0
        self._pending: list[str] = []
        self._file = file

    def add(self, row: Sequence[object]) -> None:
        self._pending.append(_csv_line(row))
        self.rows += 1
        if len(self._pending) >= _FLUSH_ROWS:
            self._flush()

    def add_line(self, line: str) -> None:
        """A row already written as a CSV line, by a caller whose values never need quoting."""
        self._pending.append(line)
        self.rows += 1
        if len(self._pending) >= _FLUSH_ROWS:
            self._flush()

    def chunks(self) -> Iterator[bytes]:
        """The CSV in 1 MiB pieces: pg8000 sends each item of an iterable as one CopyData message."""
        self._flush()
        self._file.seek(0)
        while chunk := self._file.read(_COPY_CHUNK_BYTES):
            yield chunk

    def _flush(self) -> None:
        if self._pending:
            self._file.write("".join(self._pending).encode("utf-8"))
            self._pending.clear()


def _csv_line(row: Sequence[object]) -> str:
    """One COPY CSV line. PostgreSQL reads an unquoted empty field as NULL, so None is left empty and every
    string is quoted: '' stays an empty string, and commas, quotes, newlines and backslashes are safe (quoted
    numbers and timestamps are still parsed by their column's type). Written inline: it runs for every value.
    """
    return (
        ",".join(
            [
                ""
                if value is None
                else '"' + value.replace('"', '""') + '"'
                if type(value) is str
                else ("true" if value else "false")
                if type(value) is bool
                else str(value)
                for value in row
            ]
        )
        + "\n"
    )


def _timestamp(ms: int) -> str:
    """'YYYY-MM-DD HH:MM:SS.mmm': production's millisecond precision, from the fixed base."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).isoformat(" ", "milliseconds")


def _money(cents: int) -> str:
    """Unscaled numeric text as the application writes it: '2.99', '2.5', '3' without trailing zeros."""
    whole, fraction = divmod(cents, 100)
    if fraction == 0:
        return str(whole)
    if fraction % 10 == 0:
        return f"{whole}.{fraction // 10}"
    return f"{whole}.{fraction:02d}"


def _allocate(total: int, weights: Sequence[float]) -> list[int]:
    """Split `total` into whole parts in proportion to `weights`, summing exactly to `total`."""
    scale = total / sum(weights)
    parts, cumulative, given = [], 0.0, 0
    for weight in weights:
        cumulative += weight * scale
        upto = min(total, round(cumulative))
        parts.append(upto - given)
        given = upto
    parts[-1] += total - given
    return parts


def _ascii_slug(text: str) -> str:
    """'Zoë' -> 'zoe', "O'Connor" -> 'oconnor': e-mail addresses stay ASCII even when names are not."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z]", "", folded.lower())


class _Builder:
    """Draws every row from one random stream, in a fixed order, and hands each to its table's spool."""

    def __init__(self, rng: random.Random, scale: float, spools: dict[str, _Spool]) -> None:
        self.rng = rng
        self.scale = scale
        self.spools = spools
        self.prisma_migration: dict[str, object] = {}
        self.design_created: list[int] = []  # creation ms of design n+1, ascending: orders pick existing ones
        self.company_accounts: list[int] = []
        self.counterparty_accounts: list[int] = []
        self.rand = rng.random
        self.sales_order_id = self.purchase_order_id = self.transaction_id = self.payment_id = 0  # last used

    def build(self) -> None:
        rng = self.rng
        # The migration ran, then the reference data was inserted in one go just after 08:00 on day one.
        migrated_ms = _OPEN_MS - rng.randrange(60_000, 3_600_000)
        started = (_EPOCH + dt.timedelta(milliseconds=migrated_ms)).replace(tzinfo=dt.UTC)
        self.prisma_migration = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "checksum": f"{rng.getrandbits(256):064x}",
            "started_at": started,
            "finished_at": started + dt.timedelta(milliseconds=rng.randrange(50, 900)),
            "name": f"{started:%Y%m%d%H%M%S}_init",
        }
        reference_ms = _OPEN_MS + rng.randrange(0, 120_000)
        self._addresses(reference_ms)
        self._departments(reference_ms)
        self._currencies(reference_ms)
        self._payment_types(reference_ms)
        self._counterparties(reference_ms)
        self._staff(reference_ms)
        self._orders(first_ms=reference_ms + 1_000)

    # -- reference tables: fixed sizes, one batch insert, a few rows edited later --

    def _later(self, created_ms: int, share: float) -> int:
        """last_updated of a row created at `created_ms`: mostly the same, sometimes a later edit."""
        if self.rng.random() >= share:
            return created_ms
        day = self.rng.randrange(created_ms // _DAY_MS + 1, _DAYS)
        return day * _DAY_MS + self.rng.randrange(_OPEN_MS, _CLOSE_MS)

    def _person(self) -> str:
        return f"{self.rng.choice(_FIRST_NAMES)} {self.rng.choice(_LAST_NAMES)}"

    def _nulls(self, count: int, among: int) -> set[int]:
        """Exactly `count` of `among` rows get NULL, so every seed shows NULLs (a share could draw none)."""
        return set(self.rng.sample(range(among), count))

    def _addresses(self, ms: int) -> None:
        rng, created = self.rng, _timestamp(ms)
        no_line_2, no_district = self._nulls(12, _ADDRESSES), self._nulls(6, _ADDRESSES)
        for i in range(_ADDRESSES):
            # Every city once, then random ones: the accented names always appear.
            city, district, country, pattern = _CITIES[i] if i < len(_CITIES) else rng.choice(_CITIES)
            postal_code = "".join(
                rng.choice(_UPPER) if c == "A" else str(rng.randrange(10)) if c == "9" else c for c in pattern
            )
            self.spools["address"].add((
                i + 1,
                f"{rng.randint(1, 9999)} {rng.choice(_STREETS)}",
                None if i in no_line_2 else rng.choice(_LINE_2),
                None if i in no_district else district,
                city,
                postal_code,
                country,
                f"{rng.randint(1000, 9999)} {rng.randint(100000, 999999)}",
                created,
                _timestamp(self._later(ms, 0.1)),
            ))  # fmt: skip

    def _departments(self, ms: int) -> None:
        rng, created = self.rng, _timestamp(ms)
        no_location, no_manager = self._nulls(2, len(_DEPARTMENTS)), self._nulls(1, len(_DEPARTMENTS))
        for i, name in enumerate(_DEPARTMENTS):
            self.spools["department"].add((
                i + 1,
                name,
                None if i in no_location else rng.choice(_DEPARTMENT_LOCATIONS),
                None if i in no_manager else self._person(),
                created,
                _timestamp(self._later(ms, 0.15)),
            ))  # fmt: skip

    def _currencies(self, ms: int) -> None:
        created = _timestamp(ms)
        for i, code in enumerate(_CURRENCIES):
            self.spools["currency"].add((i + 1, code, created, created))
            self.company_accounts.append(self.rng.randrange(10_000_000, 100_000_000))

    def _payment_types(self, ms: int) -> None:
        created = _timestamp(ms)
        for i, name in enumerate(_PAYMENT_TYPES):
            self.spools["payment_type"].add((i + 1, name, created, created))

    def _counterparties(self, ms: int) -> None:
        rng, created = self.rng, _timestamp(ms)
        names = list(_COUNTERPARTY_NAMES)
        rng.shuffle(names)
        no_commercial, no_delivery = self._nulls(2, _COUNTERPARTIES), self._nulls(2, _COUNTERPARTIES)
        legal_addresses = rng.sample(range(1, _ADDRESSES + 1), _COUNTERPARTIES)
        for i in range(_COUNTERPARTIES):
            self.spools["counterparty"].add((
                i + 1,
                names[i],
                legal_addresses[i],
                None if i in no_commercial else self._person(),
                None if i in no_delivery else self._person(),
                created,
                _timestamp(self._later(ms, 0.1)),
            ))  # fmt: skip
            self.counterparty_accounts.append(rng.randrange(10_000_000, 100_000_000))

    def _staff(self, ms: int) -> None:
        rng, created = self.rng, _timestamp(ms)
        # Every name in the pools is used once, so the apostrophes and accents always appear.
        first_names, last_names = list(_FIRST_NAMES), list(_LAST_NAMES)
        rng.shuffle(first_names)
        rng.shuffle(last_names)
        for i, (first, last) in enumerate(zip(first_names, last_names, strict=True)):
            self.spools["staff"].add((
                i + 1,
                first,
                last,
                rng.randint(1, len(_DEPARTMENTS)),
                f"{_ascii_slug(first)}.{_ascii_slug(last)}@terrifictotes.com",
                created,
                _timestamp(self._later(ms, 0.1)),
            ))  # fmt: skip

    # -- growing tables: designs, orders, and one transaction and one payment per order --

    def _batches(self, rows: int, low_ms: int, high_ms: int) -> list[tuple[int, int]]:
        """Split `rows` into batch inserts of 1-5 rows: (created ms, size), in time order."""
        rng, batches = self.rng, []
        while rows > 0:
            size = min(rows, _BATCH_SIZES[bisect.bisect_left(_BATCH_CUM_WEIGHTS, rng.random())])
            batches.append((rng.randrange(low_ms, high_ms), size))
            rows -= size
        batches.sort()
        return batches

    def _edited(self, created_ms: int, share: float) -> int | None:
        """When a row is edited after insertion, mostly within days: a later ms in working hours, or None."""
        rng = self.rng
        if rng.random() >= share:
            return None
        day = created_ms // _DAY_MS + int(rng.expovariate(0.25))
        low = created_ms + 1 if day == created_ms // _DAY_MS else day * _DAY_MS + _OPEN_MS
        high = day * _DAY_MS + _CLOSE_MS
        if day >= _DAYS or low >= high:
            return None
        return rng.randrange(low, high)

    def _orders(self, first_ms: int) -> None:
        rng, scale = self.rng, self.scale
        sales_total = max(1, round(_SALES_ORDERS * scale))
        purchase_total = max(1, round(_PURCHASE_ORDERS * scale))
        designs_total = max(1, round(_DESIGNS * scale))
        designs_at_start = max(1, designs_total // 5)

        busy = [
            rng.uniform(0.7, 1.3) * (0.75 if (_FIRST_DAY + dt.timedelta(days=d)).weekday() >= 5 else 1.0)
            for d in range(_DAYS)
        ]
        sales_per_day = _allocate(sales_total, busy)
        purchases_per_day = _allocate(purchase_total, busy)
        designs_per_day = _allocate(designs_total - designs_at_start, [rng.random() for _ in range(_DAYS)])

        self._designs([(first_ms - 1_000, designs_at_start)])
        for day in range(_DAYS):
            low = max(day * _DAY_MS + _OPEN_MS, first_ms)
            high = day * _DAY_MS + _CLOSE_MS
            self._designs(self._batches(designs_per_day[day], low, high))
            events = [(ms, 0, size) for ms, size in self._batches(sales_per_day[day], low, high)]
            events += [(ms, 1, size) for ms, size in self._batches(purchases_per_day[day], low, high)]
            events.sort()
            for ms, kind, size in events:
                batch_edit = self._edited(ms, 0.06)
                created = _timestamp(ms)
                for _ in range(size):
                    edited = batch_edit or self._edited(ms, 0.04)
                    if kind == 0:
                        self._sale(ms, created, edited)
                    else:
                        self._purchase(ms, created, edited)

    def _designs(self, batches: list[tuple[int, int]]) -> None:
        rng, spool = self.rng, self.spools["design"]
        for ms, size in batches:
            created = _timestamp(ms)
            for _ in range(size):
                self.design_created.append(ms)
                name = rng.choice(_DESIGN_WORDS)
                day = _DATES[ms // _DAY_MS].replace("-", "")
                suffix = "".join(rng.choices(_LOWER, k=4))
                spool.add((
                    len(self.design_created),
                    created,
                    name,
                    rng.choice(_FILE_LOCATIONS),
                    f"{name.lower()}-{day}-{suffix}.json",
                    _timestamp(self._edited(ms, 0.05) or ms),
                ))  # fmt: skip

    # The order loop below runs 1.6 million times at scale 100, so it draws with `int(random() * n)` (a tenth
    # of `randint`'s cost) and writes CSV lines directly: every value in them is a number or text from a
    # fixed alphabet (timestamps, dates, amounts, codes), which needs no quoting.

    def _sale(self, ms: int, created: str, edited: int | None) -> None:
        rand = self.rand
        self.sales_order_id += 1
        counterparty = 1 + int(rand() * _COUNTERPARTIES)
        currency = _currency(rand())
        units, price = 1_000 + int(rand() * 99_001), 200 + int(rand() * 201)
        agreed_day = (edited or ms) // _DAY_MS  # agreed a few days after the order, or after its last edit
        delivery, payment_day = agreed_day + 2 + int(rand() * 6), agreed_day + 1 + int(rand() * 7)
        design = 1 + int(rand() * bisect.bisect_right(self.design_created, ms))  # only designs that exist
        staff, location = 1 + int(rand() * _STAFF), 1 + int(rand() * _ADDRESSES)
        last_updated = _timestamp(edited) if edited else created
        self.spools["sales_order"].add_line(
            f"{self.sales_order_id},{created},{last_updated},{design},{staff},{counterparty},{units},"
            f"{_money(price)},{currency},{_DATES[delivery]},{_DATES[payment_day]},{location}\n"
        )
        self.transaction_id += 1
        self.spools["transaction"].add_line(f"{self.transaction_id},SALE,{self.sales_order_id},,{created},{created}\n")
        self._payment(ms, created, counterparty, currency, units * price, payment_day, 2 if rand() < 0.1 else 1)

    def _purchase(self, ms: int, created: str, edited: int | None) -> None:
        rand = self.rand
        self.purchase_order_id += 1
        counterparty = 1 + int(rand() * _COUNTERPARTIES)
        currency = _currency(rand())
        quantity, price = 1 + int(rand() * 1_000), 100 + int(rand() * 99_901)
        agreed_day = (edited or ms) // _DAY_MS
        delivery, payment_day = agreed_day + 2 + int(rand() * 6), agreed_day + 1 + int(rand() * 7)
        staff, location = 1 + int(rand() * _STAFF), 1 + int(rand() * _ADDRESSES)
        item_code = "".join([_ITEM_CODE_CHARS[int(rand() * 36)] for _ in range(7)])
        last_updated = _timestamp(edited) if edited else created
        self.spools["purchase_order"].add_line(
            f"{self.purchase_order_id},{created},{last_updated},{staff},{counterparty},{item_code},"
            f"{quantity},{_money(price)},{currency},{_DATES[delivery]},{_DATES[payment_day]},{location}\n"
        )
        self.transaction_id += 1
        self.spools["transaction"].add_line(
            f"{self.transaction_id},PURCHASE,,{self.purchase_order_id},{created},{created}\n"
        )
        self._payment(ms, created, counterparty, currency, quantity * price, payment_day, 4 if rand() < 0.1 else 3)

    def _payment(
        self, ms: int, created: str, counterparty: int, currency: int, cents: int, day: int, payment_type: int
    ) -> None:
        """The application records an order, its transaction and its payment in one insert batch."""
        rand = self.rand
        # Payments due inside the data are mostly settled; some were marked paid on the day, an edit.
        paid, last_updated = "false", created
        if day < _DAYS and rand() < 0.7:
            paid = "true"
            if rand() < 0.4:
                marked = day * _DAY_MS + _OPEN_MS + int(rand() * (_CLOSE_MS - _OPEN_MS))
                last_updated = _timestamp(max(marked, ms + 1))
        self.payment_id += 1
        self.spools["payment"].add_line(
            f"{self.payment_id},{created},{last_updated},{self.transaction_id},{counterparty},"
            f"{_money(cents)},{currency},{payment_type},{paid},{_DATES[day]},"
            f"{self.company_accounts[currency - 1]},{self.counterparty_accounts[counterparty - 1]}\n"
        )


def _currency(draw: float) -> int:
    """currency_id for a uniform draw: GBP half the time, USD and EUR a quarter each."""
    return 1 if draw < 0.5 else 2 if draw < 0.75 else 3
