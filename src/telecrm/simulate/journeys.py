"""A patient's path up to the first order, and a bounced visitor's few anonymous visits.

Each journey is a generator of `(instant, type, data)` steps in time order; `generator.py`
interleaves all of them by time. The funnel: anonymous sessions, registration (which links the
visitor's anonymous id), questionnaire, consultation (assigned to and accepted by a provider),
prescription and treatment plan, first order; `purchases.py` takes it from there. A patient whose
fate stops short lingers for a few visits, then goes silent.
"""

from __future__ import annotations

from collections.abc import Iterator

from telecrm.simulate.activity import ACCOUNT_PAGES, Step, World, soon_or_later
from telecrm.simulate.actors import Fate, Patient, Visitor
from telecrm.simulate.calendar import MINUTE
from telecrm.simulate.clinical import history_for, symptoms_for, treatment_for
from telecrm.simulate.purchases import one_off_life, subscription_life
from telecrm.simulate.sampling import one_of, poisson

BROWSE_PAGES = ("/how-it-works", "/pricing", "/reviews", "/faq", "/providers")
LINGERING_VISITS = 0.8  # mean visits after stalling in the funnel (assumption)
LINGERING_TICKET = 0.04  # chance a stalled patient files a ticket (assumption)


def visitor_journey(w: World, v: Visitor) -> Iterator[Step]:
    t = v.arrival
    yield t, "session.tracked", {"page": v.page, "channel": v.channel}
    for _ in range(v.sessions - 1):
        t = w.cal.later(w.rng, v.tz, t, 4.0, max_days=30)
        yield t, "session.tracked", {"page": one_of(w.rng, BROWSE_PAGES)}


def patient_journey(w: World, p: Patient) -> Iterator[Step]:
    rng, cal, area = w.rng, w.cal, p.area_info()
    t = p.arrival
    yield t, "session.tracked", {"page": area.page, "channel": p.channel}
    for _ in range(p.extra_sessions):
        t = cal.later(rng, p.tz, t, 3.0, max_days=30)
        yield t, "session.tracked", {"page": area.page + one_of(rng, BROWSE_PAGES)}
    t += rng.randint(2 * MINUTE, 20 * MINUTE)
    p.registered = True
    yield (
        t,
        "patient.registered",
        w.people.registration(
            rng,
            number=p.number,
            place=w.people.places[p.place],
            sex=p.sex,
            age=p.age,
            language=p.language,
            channel=p.channel,
            registered_on=cal.local_date(p.tz, t),
        ),
    )
    if p.fate < Fate.QUESTIONNAIRE:
        yield from lingering(w, p, t)
        return
    t = soon_or_later(w, p, t, 0.7, 2.0)
    yield (
        t,
        "questionnaire.started",
        {
            "questionnaire_id": p.object_id("q"),
            "condition_area": area.code,
        },
    )
    if p.fate < Fate.CONSULTATION:
        yield from lingering(w, p, t)
        return
    t = soon_or_later(w, p, t, 0.6, 1.5)
    history = history_for(rng, area, p.age)
    consultation = p.object_id("con")
    yield (
        t,
        "consultation.submitted",
        {
            "consultation_id": consultation,
            "condition_area": area.code,
            "symptoms": symptoms_for(rng, area),
            "conditions": list(history.conditions),
            "medications": list(history.medications),
            "allergies": list(history.allergies),
        },
    )
    provider = w.care.pick(rng)
    p.provider = provider.id
    t += rng.randint(MINUTE, 10 * MINUTE)  # routing to a provider's queue (assumption)
    yield t, "consultation.assigned", {"consultation_id": consultation, "provider_id": provider.id}
    t += w.care.response_seconds(rng, provider)
    yield t, "consultation.accepted", {"consultation_id": consultation, "provider_id": provider.id}
    if p.no_show or p.fate < Fate.TREATMENT:
        yield from lingering(w, p, t)
        return
    t += w.care.visit_seconds(rng)
    p.medication = treatment_for(rng, area, p.sex, history.allergies)
    p.prescription_id = p.object_id("rx")
    yield (
        t,
        "prescription.approved",
        {
            "prescription_id": p.prescription_id,
            "consultation_id": consultation,
            "medication": p.medication,
            "days_supply": area.days_supply,
            "refills": area.refills,
        },
    )
    t += rng.randint(MINUTE, 10 * MINUTE)
    yield (
        t,
        "treatment_plan.updated",
        {
            "treatment_plan_id": f"tp_{p.number}",
            "status": "created",
            "progress": "treatment started",
        },
    )
    if p.fate < Fate.FIRST_ORDER:  # primary non-adherence: the prescription is never filled
        yield from lingering(w, p, t)
        return
    t = soon_or_later(w, p, t, 0.5, 2.0)
    p.card = w.people.card(rng)
    if p.fate is Fate.SUBSCRIPTION:
        yield from subscription_life(w, p, t)
    else:
        yield from one_off_life(w, p, t)


def lingering(w: World, p: Patient, t: int) -> Iterator[Step]:
    """A patient who stopped short of buying: a few more visits, maybe a ticket, then silence."""
    rng = w.rng
    for _ in range(poisson(rng, LINGERING_VISITS)):
        t = w.cal.later(rng, p.tz, t, 7.0, max_days=45)
        yield t, "session.tracked", {"page": one_of(rng, ACCOUNT_PAGES)}
    if rng.random() < LINGERING_TICKET:
        t = w.cal.later(rng, p.tz, t, 3.0, max_days=20)
        yield (
            t,
            "support_ticket.created",
            {
                "ticket_id": p.object_id("tkt"),
                "category": one_of(rng, ("account_access", "prescription_status", "billing")),
                "priority": "normal",
            },
        )
