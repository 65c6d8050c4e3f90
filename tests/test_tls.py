"""TLS to the databases: verified by default (verify-full against the CA bundle given), `require` as the opt-out.

The real PostgreSQL of the tests, behind a TLS front on 127.0.0.1 with certificates of a test CA made here
with openssl.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from lambdas.common.db import connect
from lambdas.common.errors import PipelineError, TransientError
from lambdas.extract.bulk import record_batches
from lambdas.extract.source import snapshot


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)  # fmt: skip


def make_server_certificate(directory: Path, ca: str) -> None:
    if not (directory / "san.ext").exists():
        (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=directory)  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=directory)  # fmt: skip


class TlsFront:
    """A TLS front for PostgreSQL on 127.0.0.1, as a TLS-terminating proxy does: it answers PostgreSQL's
    SSLRequest, completes the TLS handshake with a certificate of the test CA, then relays the session to the
    real server's unix socket. (The embedded server's build has no SSL, and listens on a unix socket only.)"""

    def __init__(self, certificate: Path, key: Path, unix_socket: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certificate, key)
        self.unix_socket = unix_socket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(client,), daemon=True).start()

    def _session(self, client: socket.socket) -> None:
        with client:
            if client.recv(8) != struct.pack("!ii", 8, 80877103):  # SSLRequest
                return
            client.sendall(b"S")
            try:
                tls = self.context.wrap_socket(client, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client refused our certificate
            self.handshakes += 1
            with tls, socket.socket(socket.AF_UNIX) as server:
                server.connect(self.unix_socket)
                threading.Thread(target=self._pipe, args=(server, tls), daemon=True).start()
                self._pipe(tls, server)

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def tls_server(pg_admin: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make the test CA")
    if not str(pg_admin["host"]).startswith("/"):
        pytest.skip("the TLS front relays to the embedded server's unix socket")
    certs = Path(tempfile.mkdtemp(prefix="totesys-test-tls-"))
    make_ca(certs, "test-ca")
    make_ca(certs, "other-ca")
    make_server_certificate(certs, "test-ca")
    front = TlsFront(certs / "server.crt", certs / "server.key", f"{pg_admin['host']}/.s.PGSQL.{pg_admin['port']}")
    try:
        yield {"host": "127.0.0.1", "port": front.port, "username": pg_admin["username"], "password": "",
               "dbname": "postgres", "certs": certs, "front": front}  # fmt: skip
    finally:
        front.close()
        shutil.rmtree(certs, ignore_errors=True)


def credentials(server: dict[str, Any], **settings: str) -> dict[str, Any]:
    return {k: v for k, v in server.items() if k not in ("certs", "front")} | settings


def talks_tls(server: dict[str, Any], attempt: Any) -> bool:
    """The connection works, and went through a TLS handshake with the front."""
    before = server["front"].handshakes
    con = attempt()
    try:
        return con.run("SELECT 1") == [[1]] and server["front"].handshakes == before + 1
    finally:
        con.close()


def test_a_secret_without_sslmode_verifies_the_server_against_the_ca_bundle_given(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server["certs"] / "test-ca.crt"))
    assert talks_tls(tls_server, lambda: connect(credentials(tls_server)))


def test_a_server_whose_certificate_the_bundle_does_not_trust_is_refused_and_not_retried(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server["certs"] / "other-ca.crt"))
    with pytest.raises(PipelineError, match="certificate is not trusted") as refused:
        connect(credentials(tls_server))
    assert not isinstance(refused.value, TransientError)


def test_verify_full_checks_the_host_name_and_verify_ca_does_not(tls_server: dict[str, Any]) -> None:
    bundle = str(tls_server["certs"] / "test-ca.crt")
    (tls_server["certs"] / "san.ext").write_text("subjectAltName=DNS:elsewhere.example\n")  # a certificate for
    make_server_certificate(tls_server["certs"], "test-ca")  # another host, from the trusted CA
    other = TlsFront(tls_server["certs"] / "server.crt", tls_server["certs"] / "server.key",
                     tls_server["front"].unix_socket)  # fmt: skip
    try:
        wrong_host = credentials(tls_server, port=other.port, sslrootcert=bundle)
        with pytest.raises(PipelineError, match=r"certificate is not trusted.*(mismatch|match)"):
            connect({**wrong_host, "sslmode": "verify-full"})
        connect({**wrong_host, "sslmode": "verify-ca"}).close()
    finally:
        other.close()


def test_require_is_the_opt_out_encrypted_but_unverified(tls_server: dict[str, Any]) -> None:
    untrusted = credentials(tls_server, sslmode="require", sslrootcert=str(tls_server["certs"] / "other-ca.crt"))
    assert talks_tls(tls_server, lambda: connect(untrusted))


def test_the_system_trust_store_is_used_when_no_bundle_is_given(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)
    with pytest.raises(PipelineError, match="certificate is not trusted"):  # a test CA is in no system store
        connect(credentials(tls_server))
    assert os.environ.get("PGSSLROOTCERT") is None


# The extract's bulk reader (libpq, through ADBC) opens its connection with the settings of the pg8000 one.


def bulk_read_through(server: dict[str, Any], port: int | None = None, **settings: str) -> list[Any]:
    """A bulk read whose own connection uses `settings` (and `port`), beside a pg8000 connection that trusts the
    test CA. Only the TLS front leads to the server over TCP: a read that returns went through TLS."""
    con = connect(credentials(server, sslrootcert=str(server["certs"] / "test-ca.crt")))
    try:
        bulk = credentials(server, **settings) | ({"port": port} if port else {})
        con.settings = replace(con.settings, credentials=bulk)
        with snapshot(con), record_batches(con, "SELECT 1 AS one", {}, batch_bytes=1024) as batches:
            return [row for batch in batches for row in batch.to_pylist()]
    finally:
        con.close()


def test_the_bulk_reader_verifies_the_server_against_the_ca_bundle_given(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server["certs"] / "test-ca.crt"))
    before = tls_server["front"].handshakes
    assert bulk_read_through(tls_server) == [{"one": 1}]
    assert tls_server["front"].handshakes > before + 1  # pg8000's connection and the bulk reader's


def test_the_bulk_reader_refuses_an_untrusted_server_and_does_not_retry(
    tls_server: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSSLROOTCERT", str(tls_server["certs"] / "other-ca.crt"))
    with pytest.raises(PipelineError, match="certificate is not trusted") as refused:
        bulk_read_through(tls_server)
    assert not isinstance(refused.value, TransientError)
    monkeypatch.delenv("PGSSLROOTCERT")
    with pytest.raises(PipelineError, match="certificate is not trusted"):  # nor is a test CA in the system store
        bulk_read_through(tls_server)


def test_the_bulk_reader_checks_the_host_name_in_verify_full_only(tls_server: dict[str, Any]) -> None:
    bundle = str(tls_server["certs"] / "test-ca.crt")
    certs = tls_server["certs"]
    (certs / "san.ext").write_text("subjectAltName=DNS:elsewhere.example\n")
    make_server_certificate(certs, "test-ca")
    other = TlsFront(certs / "server.crt", certs / "server.key", tls_server["front"].unix_socket)
    try:
        with pytest.raises(PipelineError, match="certificate is not trusted"):
            bulk_read_through(tls_server, other.port, sslmode="verify-full", sslrootcert=bundle)
        assert bulk_read_through(tls_server, other.port, sslmode="verify-ca", sslrootcert=bundle) == [{"one": 1}]
    finally:
        other.close()
        (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        make_server_certificate(certs, "test-ca")


def test_the_bulk_reader_honours_require_as_the_opt_out(tls_server: dict[str, Any]) -> None:
    untrusted = str(tls_server["certs"] / "other-ca.crt")
    before = tls_server["front"].handshakes
    assert bulk_read_through(tls_server, sslmode="require", sslrootcert=untrusted) == [{"one": 1}]
    assert tls_server["front"].handshakes > before + 1
