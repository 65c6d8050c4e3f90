"""The local stand-in for S3 persistence: moto's buckets mirrored to a directory a person can open.

moto keeps objects in memory, so the runner loads `<lake>/<bucket>/<key>` into moto before a run and
writes new or changed objects back after every Lambda invocation, in the order S3 received them (a state
object last among writes of the same instant), and removes the files of deleted ones. Each file is written to
a temporary name and renamed, so a run killed mid-flush leaves the lake as consistent as S3 would be: a head
never points at data that is not there, and a log's first head is there before its first batch.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from lambdas.common import lake


class LakeMirror:
    def __init__(self, root: Path, buckets: list[str]) -> None:
        self.root, self.buckets = root, buckets
        self._written: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def restore(self, s3: Any) -> int:
        """Upload every file of the lake directory into the (empty) moto buckets."""
        count = 0
        for bucket in self.buckets:
            base = self.root / bucket
            for path in sorted(base.rglob("*")) if base.exists() else []:
                if path.is_file() and not path.name.endswith(".tmp"):
                    key = path.relative_to(base).as_posix()
                    s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                    self._written[(bucket, key)] = self._etag(bucket, key)
                    count += 1
        return count

    @staticmethod
    def _objects(bucket: str) -> dict[str, Any]:
        return s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys

    def _etag(self, bucket: str, key: str) -> str:
        return self._objects(bucket)[key].etag

    def flush(self) -> int:
        """Write objects that are new or changed since the last flush, in S3's order; remove deleted ones."""
        with self._lock:
            pending = []
            for bucket in self.buckets:
                for key, obj in list(self._objects(bucket).items()):
                    if self._written.get((bucket, key)) != obj.etag:
                        pending.append(((obj.last_modified, key.startswith(f"{lake.STATE_PREFIX}/")), bucket, key, obj))
            for _, bucket, key, obj in sorted(pending, key=lambda p: p[0]):
                try:
                    value = obj.value
                except ValueError:  # overwritten meanwhile: stop here, so nothing later is written before it;
                    break  # the writer's own flush, at the end of its invocation, writes the rest in order
                path = self.root / bucket / key
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_bytes(value)
                os.replace(tmp, path)
                self._written[(bucket, key)] = obj.etag
            gone = [(b, k) for b, k in self._written if k not in self._objects(b)]  # e.g. a released lease
            for bucket, key in gone:
                (self.root / bucket / key).unlink(missing_ok=True)
                del self._written[(bucket, key)]
            return len(pending) + len(gone)
