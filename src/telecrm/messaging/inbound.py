"""Inbound SMS: Twilio's keywords and free-text revocations applied to consent at once, survey
answers (0-10) recorded as NPS per patient and per provider, other replies counted.

The body is read for a keyword or a score and dropped: it may hold anything, PHI included, so it
is never stored or logged. A number telecrm does not know that texts STOP is remembered by blind
index, so a patient who later registers with it is not texted.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from sqlalchemy import Connection, delete, select, update

from telecrm.domain.clock import to_micros
from telecrm.domain.consent import ConsentEntry
from telecrm.domain.identity import InvalidIdentity, normalise_phone
from telecrm.ingest.intake import IntakeResult
from telecrm.messaging.keywords import Reply, reply_text
from telecrm.messaging.planner import record_consent
from telecrm.messaging.provider_events import InboundSms
from telecrm.messaging.tables import (
    message_suppressions,
    messages,
    nps_responses,
    provider_receipts,
)
from telecrm.messaging.tracking import InboundOutcome, engagement_event, event_id_for
from telecrm.messaging.twilio_webhook import classify_keyword, looks_like_revocation
from telecrm.profiles.codec import decode
from telecrm.profiles.tables import profiles
from telecrm.store.upsert import insert_ignoring_conflicts

if TYPE_CHECKING:
    from telecrm.messaging.tracking import Tracker

SURVEY_TEMPLATE = "satisfaction_survey"
SURVEY_WINDOW_US = 7 * 86_400_000_000
_SCORE = re.compile(r"^\s*(10|[0-9])\s*[.!]?\s*$")


class InboundHandler:
    def __init__(self, tracker: Tracker) -> None:
        self._t = tracker

    def apply(self, sms: InboundSms) -> InboundOutcome:
        cipher, index = self._t._cipher(), self._t._index()
        now = self._t._clock.now()
        now_us = to_micros(now)
        try:
            bidx = index.phone(normalise_phone(sms.from_phone))
        except InvalidIdentity:
            return InboundOutcome("unknown_sender")
        with self._t._engine.connect() as conn:
            if self._t._seen(conn, [("twilio_in", sms.receipt_id)]):
                return InboundOutcome("duplicate")
            row = conn.execute(select(profiles).where(profiles.c.phone_bidx == bidx)).first()
            survey = None
            if row is not None:
                survey = conn.execute(
                    select(messages.c.message_id, messages.c.template)
                    .where(
                        messages.c.patient_key == row.patient_key,
                        messages.c.template == SURVEY_TEMPLATE,
                        messages.c.channel == "sms",
                        messages.c.sent_us > now_us - SURVEY_WINDOW_US,
                        messages.c.replied_us.is_(None),
                    )
                    .order_by(messages.c.sent_us.desc())
                    .limit(1)
                ).first()
        values = decode(row, cipher).profile.values if row is not None else {}
        language = values.get("language") if isinstance(values.get("language"), str) else None
        keyword = classify_keyword(sms.body)
        revoked = keyword is None and looks_like_revocation(sms.body)
        score_match = _SCORE.match(sms.body) if keyword is None and not revoked else None

        action: str
        reply_kind: Reply | None = None
        if keyword == "stop" or revoked:
            action = "revoked" if revoked else "opted_out"
            reply_kind = "revoked" if revoked else ("stop" if self._we_reply() else None)
        elif keyword == "start":
            action, reply_kind = "opted_in", ("start" if self._we_reply() else None)
        elif keyword == "help":
            action, reply_kind = "help", ("help" if self._we_reply() else None)
        elif score_match and survey is not None:
            action = "survey_answer"
        else:
            action = "reply"
        if row is None:
            action = "unknown_sender" if action in ("reply", "help", "survey_answer") else action
        score = int(score_match.group(1)) if score_match and action == "survey_answer" else None

        def effects(conn: Connection, _: IntakeResult | None) -> None:
            insert_ignoring_conflicts(
                conn,
                provider_receipts,
                [{"provider": "twilio_in", "receipt_id": sms.receipt_id[:120], "at_us": now_us}],
                ["provider", "receipt_id"],
            )
            evidence = f"{sms.receipt_id}:{action}"
            if action in ("opted_out", "revoked"):
                source = "sms_revocation" if revoked else "sms_keyword"
                if row is not None:
                    record_consent(
                        conn,
                        row.patient_key,
                        [
                            ConsentEntry("sms", p, False, source, evidence, now_us)
                            for p in ("transactional", "marketing")
                        ],
                    )
                else:  # an unknown number: remember the opt-out by blind index
                    insert_ignoring_conflicts(
                        conn,
                        message_suppressions,
                        [
                            {
                                "channel": "sms",
                                "address_bidx": bidx,
                                "reason": "opted_out",
                                "source": source,
                                "at_us": now_us,
                            }
                        ],
                        ["channel", "address_bidx"],
                    )
            elif action == "opted_in":
                if row is not None:
                    record_consent(
                        conn,
                        row.patient_key,
                        [
                            ConsentEntry(
                                "sms", "transactional", True, "sms_keyword", evidence, now_us
                            )
                        ],
                    )
                conn.execute(
                    delete(message_suppressions).where(
                        message_suppressions.c.channel == "sms",
                        message_suppressions.c.address_bidx == bidx,
                        message_suppressions.c.reason == "opted_out",
                    )
                )
            elif action == "survey_answer" and row is not None and survey is not None:
                provider = values.get("provider_id")
                conn.execute(
                    nps_responses.insert().values(
                        patient_key=row.patient_key,
                        message_id=survey.message_id,
                        score=score,
                        provider_sealed=cipher.encrypt_json(
                            provider, record_id=survey.message_id, field="provider_id"
                        )
                        if provider
                        else None,
                        at_us=now_us,
                    )
                )
                conn.execute(
                    update(messages)
                    .where(messages.c.message_id == survey.message_id)
                    .values(status="replied", replied_us=now_us)
                )

        event_type = {
            "opted_out": "sms.opted_out",
            "revoked": "sms.opted_out",
            "opted_in": "sms.opted_in",
            "survey_answer": "sms.replied",
            "reply": "sms.replied",
        }.get(action)
        if row is not None and event_type is not None:
            message_id = survey.message_id if survey is not None and score is not None else None
            event = engagement_event(
                event_id_for("twilio_in", sms.receipt_id),
                event_type,
                row.patient_key,
                sms.at,
                message_id or _safe_id(sms.receipt_id),
                SURVEY_TEMPLATE if message_id else None,
                now,
            )
            self._t._intake.accept(
                [event],
                source="twilio",
                actor="twilio",
                unknown_patients="skip",
                in_transaction=effects,
            )
        else:
            with self._t._engine.begin() as conn:
                effects(conn, None)
        reply = (
            reply_text(reply_kind, language, brand=self._t.brand, support=self._t.support)
            if reply_kind
            else None
        )
        return InboundOutcome(action, reply, score)

    def _we_reply(self) -> bool:
        return self._t.keyword_replies == "telecrm"


def _safe_id(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.:\-]", "", value)[:120]
    return cleaned if cleaned and cleaned[0].isalnum() else "inbound-" + cleaned[:100]
