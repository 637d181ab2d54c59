"""The newest credential a CRM handed back (Pipedrive's single-use refresh tokens), kept sealed in
the database: every worker and every restart starts from it, not from the spent one in the
environment."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Engine, select

from telecrm.security.envelope import FieldCipher
from telecrm.store.upsert import upsert
from telecrm.sync.tables import connector_credentials


class CredentialStore:
    def __init__(self, engine: Engine, cipher: Callable[[], FieldCipher]) -> None:
        self._engine = engine
        self._cipher = cipher

    def get(self, destination: str, name: str) -> str | None:
        cipher = self._cipher()  # keys before the transaction (the keyring may need its own)
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(connector_credentials.c.sealed).where(
                    connector_credentials.c.destination == destination,
                    connector_credentials.c.name == name,
                )
            ).scalar_one_or_none()
        if sealed is None:
            return None
        return str(cipher.decrypt_json(sealed, record_id=destination, field=name))

    def put(self, destination: str, name: str, value: str) -> None:
        cipher = self._cipher()
        row = {
            "destination": destination,
            "name": name,
            "sealed": cipher.encrypt_json(value, record_id=destination, field=name),
            "updated_us": int(time.time() * 1_000_000),
        }
        with self._engine.begin() as conn:
            upsert(
                conn,
                connector_credentials,
                [row],
                ["destination", "name"],
                ["sealed", "updated_us"],
            )
