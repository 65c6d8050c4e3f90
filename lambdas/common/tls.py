"""libpq's TLS settings (sslmode, sslrootcert, PGSSLROOTCERT) in Python's ssl terms, for every client we open.

A connection over TCP is encrypted and proves the server by its certificate unless the secret says otherwise:
a secret without sslmode gets `verify-full`, checked against the CA bundle the secret names, else the one the
deployment provides (PGSSLROOTCERT, as in libpq), else the system's. pg8000 takes the `ssl.SSLContext` built here;
the bulk reader gives libpq the same choices in its URI (lambdas/extract/libpq.py).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from functools import lru_cache

from lambdas.common.errors import PipelineError, truncated
from lambdas.common.settings import DatabaseSettings

__all__ = ["CA_BUNDLE_ENV", "DEFAULT_SSLMODE", "ca_bundle", "certificate_problem", "ssl_context"]

CA_BUNDLE_ENV = DatabaseSettings.variable("ca_bundle")  # libpq's: the CA certificates that verify-full trusts
DEFAULT_SSLMODE = "verify-full"  # a secret without sslmode; "require" (encrypted, unverified) is the opt-out
_UNVERIFIED = ("allow", "prefer")  # TLS if the server offers it, certificate unchecked
_VERIFIED = ("require", "verify-ca", "verify-full")  # TLS or no connection


def ca_bundle(credentials: Mapping[str, object]) -> str | None:
    """The CA bundle the secret or the deployment names; None for the system's store."""
    return str(credentials.get("sslrootcert") or DatabaseSettings.from_environ().ca_bundle or "") or None


def ssl_context(sslmode: str, rootcert: str | None = None) -> ssl.SSLContext | bool | None:
    """libpq's sslmode in pg8000's terms: False for plain text, None for TLS when offered, else the context."""
    if sslmode == "disable":
        return False
    if sslmode in _UNVERIFIED:
        return None
    if sslmode not in _VERIFIED:
        raise PipelineError(f"sslmode {truncated(sslmode, 40)!r} is not one of libpq's")
    return _context(sslmode, rootcert)


@lru_cache(maxsize=4)
def _context(sslmode: str, rootcert: str | None) -> ssl.SSLContext:
    """Built once per container: loading the CA store costs ~0.1 s."""
    context = ssl.create_default_context(cafile=rootcert)
    if sslmode == "require":  # encrypted, certificate not checked: the documented opt-out
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif sslmode == "verify-ca":  # the certificate is checked, the host name is not
        context.check_hostname = False
    return context


def certificate_problem(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, if that is why `exc` happened (its cause chain says)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"the server's certificate is not trusted ({seen.verify_message}); see sslmode and {CA_BUNDLE_ENV}"
        seen = seen.__cause__ or seen.__context__
    return None
