"""Doctor's checks of keys and secrets: present, well formed, not a weak or published value.

They read settings only (and the demo's key file, to tell its key apart): no database, no
network. A message names a setting, an entry number or a byte count, never a value.
"""

from __future__ import annotations

import hmac
from ipaddress import ip_address
from itertools import pairwise
from urllib.parse import urlsplit

from telecrm.doctor.findings import Context, Finding
from telecrm.ingest.signatures import SECRET_PREFIX, InvalidSecret, decode_secret
from telecrm.security.errors import (
    MASTER_KEY_SETTING,
    PREVIOUS_MASTER_KEYS_SETTING,
    MasterKeyInvalid,
    SecurityError,
)
from telecrm.security.keyring import parse_master_key

WEBHOOK_SECRETS_SETTING = "TELECRM_WEBHOOK_SECRETS"
# Standard Webhooks: "secrets SHOULD be between 24 and 64 bytes" (the spec's Signature scheme).
WEBHOOK_SECRET_MIN_BYTES = 24
WEBHOOK_SECRET_MAX_BYTES = 64
# Secrets printed in public documents: anyone may sign with them.
PUBLISHED_WEBHOOK_SECRETS = frozenset(
    {"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}  # the Standard Webhooks spec's own example
)
DEMO_KEY_FILE = "demo-master.key"  # written by `telecrm demo` into TELECRM_HOME
GENERATE_KEY = "make one with `telecrm keys generate` and keep it in your secrets manager"
OLD_KEY = "it must be a former TELECRM_MASTER_KEY, exactly; remove it once rotated"
GENERATE_SECRET = "make one with `telecrm secrets webhook` and share it with the platform"  # noqa: S105


def weakness(raw: bytes) -> str | None:
    """Why these bytes cannot have come from a random generator, or None."""
    if len(set(raw)) == 1:
        return "every byte is the same"
    for period in range(1, len(raw) // 2 + 1):
        if len(raw) % period == 0 and raw == raw[:period] * (len(raw) // period):
            return f"it repeats a {period}-byte pattern"
    steps = {(b - a) % 256 for a, b in pairwise(raw)}
    if len(steps) == 1:
        return "its bytes count up or down"
    # 32 random bytes hold ~30 distinct values; fewer than half is a pattern, not chance.
    if len(set(raw)) < len(raw) // 2:
        return "it has too few distinct bytes to be random"
    return None


def check_master_key(ctx: Context) -> list[Finding]:
    name = "master key"
    configured = ctx.settings.master_key
    if configured is None:
        return [
            Finding(
                name,
                "fail",
                f"{MASTER_KEY_SETTING} is not set: no PHI can be encrypted or read",
                f"{GENERATE_KEY}; set {MASTER_KEY_SETTING} or {MASTER_KEY_SETTING}_FILE",
            )
        ]
    try:
        key = parse_master_key(configured.get_secret_value())
    except MasterKeyInvalid as exc:
        return [
            Finding(name, "fail", f"{MASTER_KEY_SETTING} is not usable: {exc.reason}", GENERATE_KEY)
        ]
    except SecurityError:
        return [Finding(name, "fail", f"{MASTER_KEY_SETTING} is empty", GENERATE_KEY)]
    weak = weakness(key)
    if weak:
        return [
            Finding(
                name,
                "fail",
                f"{MASTER_KEY_SETTING} is not a random key: {weak}",
                f"{GENERATE_KEY}, then rotate to it (docs/operations.md)",
            )
        ]
    if _is_demo_key(ctx, key):
        return [
            Finding(
                name,
                "fail",
                f"{MASTER_KEY_SETTING} is the demo's key, which lies in a plain file "
                f"({ctx.settings.home / DEMO_KEY_FILE}) next to the data",
                f"{GENERATE_KEY}, then rotate to it (docs/operations.md)",
            )
        ]
    return [Finding(name, "ok", f"{MASTER_KEY_SETTING} is set: 32 bytes that look random")]


def _is_demo_key(ctx: Context, key: bytes) -> bool:
    path = ctx.settings.home / DEMO_KEY_FILE
    try:
        demo = parse_master_key(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SecurityError):
        return False
    return hmac.compare_digest(demo, key)


def check_previous_keys(ctx: Context) -> list[Finding]:
    name = "previous master keys"
    values = ctx.settings.previous_master_keys
    if not values:
        return [Finding(name, "skip", "none set (needed only while a rotation is under way)")]
    current = ctx.settings.master_key.get_secret_value() if ctx.settings.master_key else None
    try:
        current_key = parse_master_key(current) if current else None
    except SecurityError:
        current_key = None
    out: list[Finding] = []
    seen: set[bytes] = set()
    for number, value in enumerate(values, start=1):
        entry = f"{PREVIOUS_MASTER_KEYS_SETTING} entry {number}"
        try:
            key = parse_master_key(value.get_secret_value(), setting=entry)
        except MasterKeyInvalid as exc:
            out.append(Finding(name, "fail", f"{entry} is not usable: {exc.reason}", OLD_KEY))
            continue
        except SecurityError:
            out.append(Finding(name, "fail", f"{entry} is empty", "remove the empty entry"))
            continue
        weak = weakness(key)
        if weak:
            out.append(
                Finding(
                    name,
                    "fail",
                    f"{entry} is not a random key: {weak}",
                    "finish the rotation (`telecrm keys rotate`) and remove it",
                )
            )
        elif current_key is not None and hmac.compare_digest(key, current_key):
            out.append(Finding(name, "warn", f"{entry} is the current master key", "remove it"))
        elif key in seen:
            out.append(Finding(name, "warn", f"{entry} repeats an earlier entry", "remove it"))
        seen.add(key)
    if not out:
        out.append(Finding(name, "ok", f"{len(values)} set, each 32 bytes that look random"))
    return out


def check_webhook_secrets(ctx: Context) -> list[Finding]:
    name = "webhook secrets"
    values = ctx.settings.webhook_secrets
    if not values:
        return [
            Finding(
                name,
                "warn",
                f"{WEBHOOK_SECRETS_SETTING} is not set: POST /v1/events refuses every request",
                f"{GENERATE_SECRET} (not needed if you only import or pull)",
            )
        ]
    out: list[Finding] = []
    for number, value in enumerate(values, start=1):
        entry = f"{WEBHOOK_SECRETS_SETTING} entry {number}"
        secret = value.get_secret_value().strip()
        try:
            raw = decode_secret(secret)
        except InvalidSecret as exc:
            out.append(Finding(name, "fail", f"{entry}: {exc}", GENERATE_SECRET))
            continue
        weak = weakness(raw)
        if secret in PUBLISHED_WEBHOOK_SECRETS:
            out.append(
                Finding(
                    name,
                    "fail",
                    f"{entry} is the example secret printed in the Standard Webhooks spec",
                    GENERATE_SECRET,
                )
            )
        elif weak:
            out.append(Finding(name, "fail", f"{entry} is not random: {weak}", GENERATE_SECRET))
        elif not WEBHOOK_SECRET_MIN_BYTES <= len(raw) <= WEBHOOK_SECRET_MAX_BYTES:
            out.append(
                Finding(
                    name,
                    "warn",
                    f"{entry} is {len(raw)} bytes; Standard Webhooks secrets are "
                    f"{WEBHOOK_SECRET_MIN_BYTES} to {WEBHOOK_SECRET_MAX_BYTES} bytes",
                    GENERATE_SECRET,
                )
            )
        elif not secret.startswith(SECRET_PREFIX):
            out.append(
                Finding(
                    name,
                    "warn",
                    f"{entry} lacks the {SECRET_PREFIX} prefix the platform's libraries expect",
                    f"write it as {SECRET_PREFIX}<base64>",
                )
            )
    if not out:
        out.append(Finding(name, "ok", f"{len(values)} set, each a well-formed random secret"))
    return out


def check_public_url(ctx: Context, *, providers: bool) -> list[Finding]:
    """TELECRM_PUBLIC_URL: https unless on loopback; reachable by providers when they call back."""
    name = "public URL"
    setting = "TELECRM_PUBLIC_URL"
    try:
        parts = urlsplit(ctx.settings.public_url)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme not in ("http", "https") or not host:
        return [
            Finding(
                name, "fail", f"{setting} is not an http(s) URL", "e.g. https://crm.example.com"
            )
        ]
    shown = f"{parts.scheme}://{parts.netloc}"
    loopback = _is_loopback(host)
    if parts.scheme == "http" and not loopback:
        return [
            Finding(
                name,
                "fail",
                f"{setting} is {shown}: links and provider callbacks would travel unencrypted",
                "serve telecrm behind TLS and set an https:// URL",
            )
        ]
    if loopback and providers:
        return [
            Finding(
                name,
                "warn",
                f"{setting} is {shown}, a loopback address: SendGrid and Twilio cannot call back",
                "set the https:// URL the providers reach telecrm at",
            )
        ]
    return [Finding(name, "ok", f"{setting} is {shown}")]


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False
