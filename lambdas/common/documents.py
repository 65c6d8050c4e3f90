"""The state documents: every JSON object the pipeline stores in S3 and trusts on a later run, one model each.

The idea: a stored document is input from outside, like an event, so each is a pydantic model that says what it
holds, and each carries a **format version** so that the code of one release can read what an earlier one wrote.
Reading a document (`Document.load`) goes in three steps:

1. its `format` is read (a document without one was written before formats existed: format 1);
2. a format newer than this code's is refused (`NewerFormatError`, naming the key and both formats): a rolled back
   release must not half-understand, then overwrite, what a newer one wrote;
3. an older format is upgraded one step at a time (`Document.UPGRADES`), then validated. A field that does not
   validate raises the caller's own error (a `StateError` for a head or a manifest, whose name the state machine's
   Catch rules and the failure report match), with a one-line message naming the object and the field.

Writing (`Document.dump`) always writes the current format, so a document is upgraded on its next write; nothing
ever needs a repair because it is old. The in-memory values the stages work with (`lake.Head`, `lake.Batch`) stay
plain dataclasses: these models are only the stored form.

The documents, by key (docs/guarantees.md, "State documents and their formats"):

- `_state/{extract,transform}/<table>.json`: `HeadDocument`, a batch log's head, with the stage's state beside it
  (the extract's watermark, lambdas/extract/watermark.py `WatermarkState`, its change signal and refused keys; the
  transform's `cursors`);
- `<table>/<seq>/_manifest.json`: `ManifestDocument`, one batch's parts and chain link;
- `_state/load/<table>.json`: `LoadCursorDocument`, the load's `Cursor`, its warehouse, a fact's newest loaded
  version and its `HeldEntry`;
- `_state/reconcile/<table>.json`, `_state/verify/<table>.json`: `CheckpointDocument`, a ledger and the cursor it
  covers; it only saves work, so one that does not validate is ignored;
- `<table>/<seq>/_plan-<token>.json` and `_range-<token>-<n>.json`: lambdas/extract/plan.py, a partitioned
  extract's plan and its range manifests.

Format 2 (this release) is format 1 with the `format` field: the upgrade from 1 only names the format. A later
format adds its own step to `UPGRADES` and raises `FORMAT`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, model_validator

from lambdas.common.errors import PipelineError

FORMAT_FIELD = "format"
CURRENT_FORMAT = 2

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


class NewerFormatError(PipelineError):
    """A document written by a newer release than the running code. Not a StateError: the document is not
    damaged, and a repair is not the fix; running the newer release again is. Never retried."""

    def __init__(self, where: str, found: int, known: int) -> None:
        super().__init__(f"{where} is in format {found}, written by a newer release; this release reads formats up "
                         f"to {known} and does not downgrade it: deploy the newer release again")  # fmt: skip


def _declares_format(document: dict[str, Any]) -> dict[str, Any]:
    """Format 1 to 2: the content is the same, only the format is now written down."""
    return document


def problem(error: ValidationError) -> str:
    """A validation error as one line: the first field at fault, what is wrong with it, and what it held."""
    first = error.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    if first["type"] == "missing":
        return f"field {field!r} is missing{more}"
    if not field:
        return f"{message}{more}"
    return f"field {field!r}: {message}, got {repr(first.get('input'))[:120]}{more}"


class Document(BaseModel):
    """A stored JSON object with a format version; subclasses say what it holds."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    FORMAT: ClassVar[int] = CURRENT_FORMAT
    UPGRADES: ClassVar[dict[int, Upgrade]] = {1: _declares_format}  # format n -> format n + 1

    @classmethod
    def upgraded(cls, raw: object, *, where: str, fail: Callable[[str], Exception]) -> dict[str, Any]:
        """The document's content in the current format, without its `format` field (steps 1 to 3, unvalidated)."""
        if not isinstance(raw, dict):
            raise fail(f"{where} is not a JSON object: {str(raw)[:120]}")
        found = raw.get(FORMAT_FIELD, 1)
        if type(found) is not int or found < 1:
            raise fail(f"{where}: field {FORMAT_FIELD!r}: not a format number, got {found!r:.60}")
        if found > cls.FORMAT:
            raise NewerFormatError(where, found, cls.FORMAT)
        content = {k: v for k, v in raw.items() if k != FORMAT_FIELD}
        for step in range(found, cls.FORMAT):
            content = cls.UPGRADES[step](content)
        return content

    @classmethod
    def load(cls, raw: object, *, where: str, fail: Callable[[str], Exception]) -> Self:
        """The stored document, upgraded and validated; `fail` makes the caller's error from a one-line problem."""
        content = cls.upgraded(raw, where=where, fail=fail)
        try:
            return cls.model_validate(content)
        except ValidationError as error:
            raise fail(f"{where}: {problem(error)}") from error

    def content(self) -> dict[str, Any]:
        """The document as a JSON object without its format (what was not set is left out)."""
        return self.model_dump(mode="json", exclude_unset=True)

    def dump(self) -> dict[str, Any]:
        """The stored form, in the current format (what was not set is left out, so a key's absence survives)."""
        return {**self.content(), FORMAT_FIELD: self.FORMAT}


class Cursor(BaseModel):
    """What a reader remembers of a log it has taken up to a head: (seq, log id, batch id). Lives inside the reader's
    own document (a transform head, a load cursor, a checkpoint), and has that document's format."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: StrictInt = Field(ge=0)
    log: StrictStr
    batch: StrictStr | None = None


class HeadDocument(Document):
    """A batch log's committed head (lambdas/common/lake.py) and, beside its own fields, the stage's state."""

    model_config = ConfigDict(frozen=True, extra="allow")

    seq: StrictInt = Field(ge=0)
    log: StrictStr = Field(min_length=1)
    base: StrictInt = Field(ge=1)  # the first batch of the current epoch
    last: StrictStr | None  # the id of batch `seq` when seq >= base
    rebuilt: StrictBool

    @model_validator(mode="after")
    def _in_its_epoch(self) -> Self:
        if self.base > self.seq + 1:
            raise ValueError(f"its epoch starts at batch {self.base}, after batch {self.seq} + 1")
        if (self.last is None) != (self.seq < self.base):
            raise ValueError("it must name its last batch exactly when the epoch has one")
        return self

    @property
    def state(self) -> dict[str, Any]:
        """The stage's own fields (the extract's watermark and signal, the transform's cursors)."""
        return dict(self.model_extra or {})


class ManifestDocument(Document):
    """One batch of a log: its parts, their row counts, and its links in the chain (lake.py)."""

    table: StrictStr
    seq: int
    parts: list[StrictStr]
    part_rows: list[int]
    rows: int
    meta: dict[str, Any] | None = None
    id: StrictStr
    log: StrictStr
    prev: StrictStr | None  # required: None only for an epoch's first batch


class HeldEntry(BaseModel):
    """The load cursor's pointer to a fact's held set (lambdas/load/held.py). `format` is the held *Parquet's*
    format, older than these documents: 1 (no field, before issue 20) may have turned text into NULL, 2 is exact."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: StrictStr
    rows: int = 0
    format: StrictInt = 1


class LoadCursorDocument(Document):
    """The load's own state beside the processed log it reads (lambdas/load/loader.py): the cursor, the warehouse
    it was loaded into, a fact's newest loaded version (believed only when readable: else read from the table) and
    the held set. A missing document is a load that starts again from the epoch's base, never an error."""

    model_config = ConfigDict(frozen=True, extra="allow")

    cursor: Cursor | None = None
    warehouse: dict[str, Any] | None = None
    newest_loaded: Any = None
    held: HeldEntry | None = None


class CheckpointDocument(Document):
    """A reconciliation's or a verification's checkpoint: a ledger and the cursor up to which it covers the log,
    with the columns it hashed. It only saves hashing: the readers (extract/extractor.py, load/verify.py) ignore one
    that is unusable, and so does `load`'s caller here, except one from a newer release, which is refused."""

    model_config = ConfigDict(frozen=True, extra="allow")

    cursor: Cursor | None = None
    ledger: StrictStr | None = None


# The document each reader's state (lake.ReaderState) is, by stage.
READER_DOCUMENTS: dict[str, type[Document]] = {
    "load": LoadCursorDocument,
    "reconcile": CheckpointDocument,
    "verify": CheckpointDocument,
}
LENIENT_STAGES = frozenset({"reconcile", "verify"})  # a checkpoint that does not validate is ignored, as before
