"""The ES256 keys telecrm signs its own access tokens with, sealed at rest by the keyring.

The first token ever issued creates a P-256 key. Its private half is stored as a PKCS#8 PEM
sealed with the keyring's cipher (a data key wrapped by the master key, so rotating the master
key or the data key keeps it readable); its public half is a JWK whose key id is its RFC 7638
thumbprint. Every key in the table is published at /.well-known/jwks.json; the newest active one
signs.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import Engine, select

from telecrm.domain.clock import Clock, to_micros
from telecrm.security.envelope import FieldCipher
from telecrm.security.jwks import JWKS_REFETCH_INTERVAL, VerificationKey, verification_key
from telecrm.security.tables import signing_keys

ALGORITHM = "ES256"
_SEALED_FIELD = "signing_key"


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


def _public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(public_key, as_dict=True)
    members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    return {**members, "kid": thumbprint(members), "alg": ALGORITHM, "use": "sig"}


def thumbprint(members: dict[str, Any]) -> str:
    """RFC 7638: sha256 of the required members, sorted, no spaces; base64url without padding."""
    canonical = orjson.dumps(members, option=orjson.OPT_SORT_KEYS)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode().rstrip("=")


class SigningKeys:
    """Loads, creates and caches telecrm's signing keys for one process."""

    def __init__(self, engine: Engine, cipher: Callable[[], FieldCipher], clock: Clock) -> None:
        self._engine = engine
        self._cipher = cipher
        self._clock = clock
        self._lock = threading.Lock()
        self._public: dict[str, VerificationKey] = {}
        self._jwks: list[dict[str, Any]] = []
        self._signing: SigningKey | None = None
        self._loaded_at: datetime | None = None

    def _load(self) -> None:
        with self._engine.connect() as conn:
            rows = list(conn.execute(select(signing_keys).order_by(signing_keys.c.created_us)))
        jwks = [orjson.loads(row.public_jwk) for row in rows]
        self._jwks = jwks
        self._public = {
            key.kid: key for key in (verification_key(jwk) for jwk in jwks) if key is not None
        }
        self._loaded_at = self._clock.now()
        active = [row for row in rows if row.active]
        if active and (self._signing is None or self._signing.kid != active[-1].kid):
            row = active[-1]
            cipher = self._cipher()
            pem = cipher.decrypt_json(row.sealed_private, record_id=row.kid, field=_SEALED_FIELD)
            private = serialization.load_pem_private_key(str(pem).encode(), password=None)
            assert isinstance(private, ec.EllipticCurvePrivateKey)
            self._signing = SigningKey(row.kid, private)

    def _create(self) -> None:
        cipher = self._cipher()  # keys before the transaction: opening the keyring may need one
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = _public_jwk(private.public_key())
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        with self._engine.begin() as conn:
            conn.execute(
                signing_keys.insert().values(
                    kid=jwk["kid"],
                    algorithm=ALGORITHM,
                    public_jwk=orjson.dumps(jwk).decode(),
                    sealed_private=cipher.encrypt_json(
                        pem, record_id=jwk["kid"], field=_SEALED_FIELD
                    ),
                    active=True,
                    created_us=to_micros(self._clock.now()),
                )
            )

    def signing_key(self) -> SigningKey:
        """The key that signs new tokens, created on first use.

        Two processes starting at once may each create one: both are published and both
        verify, and the newer one signs from then on.
        """
        with self._lock:
            if self._signing is None:
                self._load()
            if self._signing is None:
                self._create()
                self._load()
            assert self._signing is not None
            return self._signing

    def public_jwks(self) -> list[dict[str, Any]]:
        """Every key in the table as a public JWK (creating the first key if there is none)."""
        self.signing_key()
        with self._lock:
            self._load()
            return list(self._jwks)

    def key(self, kid: str) -> VerificationKey | None:
        """The public key with this id; re-reads the table (≤ 1/min) for an id not yet seen."""
        with self._lock:
            now = self._clock.now()
            if kid not in self._public and (
                self._loaded_at is None or now - self._loaded_at >= JWKS_REFETCH_INTERVAL
            ):
                self._load()
            return self._public.get(kid)
