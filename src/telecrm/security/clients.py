"""API clients: created with a role and a random secret shown once, stored as an scrypt hash.

A client authenticates at ``POST /oauth/token`` (OAuth 2.0 client credentials) and gets a short
access token. Secrets are 256 random bits, so brute force is hopeless anyway; the slow KDF is
what keeps a stolen ``api_clients`` table from being replayed as credentials. The hash carries
its parameters, so they can be raised later without invalidating old secrets.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import Connection, select, update

from telecrm.security.errors import SecurityError
from telecrm.security.roles import Role, parse_role
from telecrm.security.tables import api_clients

# scrypt at N=2^14, r=8, p=1 (16 MiB, some 50 ms): the interactive-login cost from Percival's
# paper, enough for a 256-bit secret, cheap enough for a token endpoint.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024
SALT_BYTES = 16
HASH_BYTES = 32
SECRET_PREFIX = "tcs_"  # noqa: S105  (a prefix that makes leaked secrets greppable)
CLIENT_ID_PREFIX = "tcc_"
CLIENT_ID_PATTERN = re.compile(r"^tcc_[0-9a-f]{16}$")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,99}$")


class ClientError(SecurityError):
    """A client command or lookup that cannot be done; the message says why, never a secret."""


class ClientNotFound(ClientError, LookupError):
    def __init__(self, client_id: str) -> None:
        super().__init__(f"no API client has id {client_id} (see `telecrm clients list`)")


@dataclass(frozen=True, slots=True)
class ApiClient:
    client_id: str
    name: str
    role: Role
    created_us: int
    disabled: bool


@dataclass(frozen=True, slots=True)
class NewClient:
    client: ApiClient
    secret: str  # shown once, never stored


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64url), the form ``api_clients.secret_hash`` stores."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM,
        dklen=HASH_BYTES,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Constant-time comparison of ``secret`` with a stored hash; False for a malformed hash."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _decoy_hash() -> str:
    """A hash no secret matches, checked when the client id is unknown, so an unknown id takes
    as long to refuse as a wrong secret and response times do not reveal which ids exist."""
    return hash_secret(secrets.token_urlsafe(32))


def _client(row: object) -> ApiClient:
    return ApiClient(
        client_id=row.client_id,  # type: ignore[attr-defined]
        name=row.name,  # type: ignore[attr-defined]
        role=Role(row.role),  # type: ignore[attr-defined]
        created_us=int(row.created_us),  # type: ignore[attr-defined]
        disabled=bool(row.disabled),  # type: ignore[attr-defined]
    )


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ClientError(
            "a client name is 1 to 100 letters, digits, spaces, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def create_client(conn: Connection, name: str, role: Role | str, *, now_us: int) -> NewClient:
    """A new enabled client with a fresh secret; the caller shows the secret once."""
    try:
        role = parse_role(str(role))
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    check_name(name)
    client_id = CLIENT_ID_PREFIX + secrets.token_hex(8)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        api_clients.insert().values(
            client_id=client_id,
            name=name,
            role=role.value,
            secret_hash=hash_secret(secret),
            created_us=now_us,
            disabled=False,
            disabled_us=None,
        )
    )
    return NewClient(ApiClient(client_id, name, role, now_us, False), secret)


def list_clients(conn: Connection) -> list[ApiClient]:
    rows = conn.execute(
        select(api_clients).order_by(api_clients.c.created_us, api_clients.c.client_id)
    )
    return [_client(row) for row in rows]


def get_client(conn: Connection, client_id: str) -> ApiClient | None:
    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        return None
    row = conn.execute(select(api_clients).where(api_clients.c.client_id == client_id)).first()
    return None if row is None else _client(row)


def disable_client(conn: Connection, client_id: str, *, now_us: int) -> ApiClient:
    """Disables a client at once: its secret stops working and its live tokens are refused."""
    client = get_client(conn, client_id)
    if client is None:
        raise ClientNotFound(client_id)
    if not client.disabled:
        conn.execute(
            update(api_clients)
            .where(api_clients.c.client_id == client_id)
            .values(disabled=True, disabled_us=now_us)
        )
    return ApiClient(client.client_id, client.name, client.role, client.created_us, True)


def authenticate_client(conn: Connection, client_id: str, secret: str) -> ApiClient | None:
    """The enabled client these credentials belong to, or None (unknown, wrong, disabled)."""
    row = None
    if CLIENT_ID_PATTERN.fullmatch(client_id):
        row = conn.execute(select(api_clients).where(api_clients.c.client_id == client_id)).first()
    ok = secret_matches(secret, row.secret_hash if row is not None else _decoy_hash())
    if row is None or not ok or row.disabled:
        return None
    return _client(row)
