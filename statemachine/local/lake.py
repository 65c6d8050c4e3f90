"""The local stand-in for S3 persistence: moto's buckets mirrored to a directory a person can open.

moto keeps objects in memory, so the runner loads `<lake>/<bucket>/<key>` into moto before a run, and from
then on writes every object to its file as moto stores it, in the writing thread, before the PutObject call
returns, and removes the file of a deleted object the same way (`write_through`). So the files go through
exactly the states S3 goes through, in its order: a run killed at any instant leaves the lake as S3 would be
(a head never points at data that is not there; a log's first head is there before its first batch; a head
overwritten twice in one invocation passed through both versions). Each file is written to a temporary name
and renamed. `flush` is a safety net after each invocation for anything written otherwise.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import S3Backend, s3_backends

from lambdas.common import keys


class LakeMirror:
    def __init__(self, root: Path, buckets: list[str]) -> None:
        self.root, self.buckets = root, buckets
        self._written: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._live = False  # set once the lake is restored: restoring must not write the files back

    @contextmanager
    def write_through(self) -> Iterator[None]:
        """Mirror moto's S3 writes and deletes to the files as they happen (see the module docstring)."""
        put, delete = S3Backend.put_object, S3Backend.delete_object
        mirror = self

        def put_object(backend: Any, bucket_name: str, key_name: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
            stored = put(backend, bucket_name, key_name, value, *args, **kwargs)
            mirror._stored(bucket_name, key_name, bytes(value), stored.etag)
            return stored

        def delete_object(backend: Any, bucket_name: str, key_name: str, *args: Any, **kwargs: Any) -> Any:
            result = delete(backend, bucket_name, key_name, *args, **kwargs)
            mirror._deleted(bucket_name, key_name)
            return result

        with mock.patch.object(S3Backend, "put_object", put_object), \
                mock.patch.object(S3Backend, "delete_object", delete_object):  # fmt: skip
            yield

    def _stored(self, bucket: str, key: str, value: bytes, etag: str) -> None:
        if not self._live or bucket not in self.buckets:
            return
        with self._lock:
            self._write(bucket, key, value)
            self._written[(bucket, key)] = etag

    def _deleted(self, bucket: str, key: str) -> None:
        if not self._live or bucket not in self.buckets:
            return
        with self._lock:
            (self.root / bucket / key).unlink(missing_ok=True)
            self._written.pop((bucket, key), None)

    def _write(self, bucket: str, key: str, value: bytes) -> None:
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(value)
        os.replace(tmp, path)

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
        self._live = True
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
                        pending.append(((obj.last_modified, key.startswith(f"{keys.STATE_PREFIX}/")), bucket, key, obj))
            for _, bucket, key, obj in sorted(pending, key=lambda p: p[0]):
                try:
                    value = obj.value
                except ValueError:  # overwritten meanwhile: stop here, so nothing later is written before it;
                    break  # the writer's own flush, at the end of its invocation, writes the rest in order
                self._write(bucket, key, value)
                self._written[(bucket, key)] = obj.etag
            gone = [(b, k) for b, k in self._written if k not in self._objects(b)]  # e.g. a released lease
            for bucket, key in gone:
                (self.root / bucket / key).unlink(missing_ok=True)
                del self._written[(bucket, key)]
            return len(pending) + len(gone)
