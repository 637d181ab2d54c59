"""Compliance replies to SMS keywords, in the patient's language (research/messaging.md §7).

With Twilio's default keyword handling (long codes, toll-free) Twilio itself answers STOP, START
and HELP, so telecrm answers only what Twilio does not catch: free-text revocations such as
"please stop texting me" (FCC 24-24: any reasonable means revokes consent). With
`TELECRM_SMS_KEYWORD_REPLIES=telecrm` (Advanced Opt-Out off, or a short code) telecrm answers every
keyword with these texts. A confirmation carries no marketing (47 CFR 64.1200(a)(10)).
"""

from __future__ import annotations

from typing import Literal

Reply = Literal["stop", "start", "help", "revoked"]

REPLIES: dict[str, dict[Reply, str]] = {
    "en": {
        "stop": "{brand}: You are unsubscribed and will receive no more texts. Reply START to resubscribe.",
        "start": "{brand}: You are resubscribed to care and account texts. Reply STOP to opt out, HELP for help.",
        "help": "{brand}: care and account texts. Help: {support}. Msg & data rates may apply. Reply STOP to opt out.",
        "revoked": "{brand}: We got it. You will receive no more texts. Reply START to resubscribe.",
    },
    "es": {
        "stop": "{brand}: Te has dado de baja y no recibirás más mensajes. Responde START para volver a suscribirte.",
        "start": "{brand}: Te has vuelto a suscribir a mensajes de atención y cuenta. Responde STOP para darte de baja.",
        "help": "{brand}: mensajes de atención y cuenta. Ayuda: {support}. Pueden aplicarse tarifas. Responde STOP para darte de baja.",
        "revoked": "{brand}: Entendido. No recibirás más mensajes. Responde START para volver a suscribirte.",
    },
}  # fmt: skip


def reply_text(kind: Reply, language: str | None, *, brand: str, support: str) -> str:
    lang = (language or "en").split("-")[0].lower()
    texts = REPLIES.get(lang, REPLIES["en"])
    return texts[kind].format(brand=brand, support=support)


def twiml(message: str | None) -> str:
    """A TwiML answer to an inbound message: one reply, or none."""
    if not message:
        return '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
    escaped = message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Response><Message>{escaped}</Message></Response>'
    )
