"""The event stream: every journey interleaved by time, in memory bounded by who is active.

People arrive day by day (weekday, season and trend weights); each arrival starts a journey
generator that is parked in a heap under the time of its next event. The loop pops the
earliest, emits it as a wire event, and asks that journey for its next one. A journey whose next
event falls after the end of the period, or that has nothing more to say, leaves the heap and
its ground-truth record goes to `on_truth`. So memory follows the patients active at once, not
the patients simulated, and the whole run is a pure function of the config (one seeded RNG
consumed in heap order, which is a total order).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from telecrm.simulate.activity import World
from telecrm.simulate.actors import (
    Patient,
    Visitor,
    draw_area,
    draw_fate,
    draw_latent,
)
from telecrm.simulate.calendar import DAY, HOUR, Calendar
from telecrm.simulate.clinical import AREAS, CareTeam, area_prices
from telecrm.simulate.config import SimulationConfig
from telecrm.simulate.ground_truth import patient_truth
from telecrm.simulate.journeys import BROWSE_PAGES, patient_journey, visitor_journey
from telecrm.simulate.population import Population
from telecrm.simulate.sampling import one_of

TruthSink = Callable[[dict[str, Any]], None]

_IDENTIFIED_SESSION = frozenset({"session.tracked", "patient.registered"})


class Simulation:
    """One run. Iterate `events()` once; `peak_active` tells how many journeys were in memory."""

    def __init__(self, config: SimulationConfig, on_truth: TruthSink | None = None) -> None:
        self.config = config
        self.on_truth = on_truth
        self.cal = Calendar(config)
        self.world = World(
            config=config,
            rng=random.Random(config.seed),
            cal=self.cal,
            people=Population(config.seed),
            care=CareTeam(config, random.Random(f"providers:{config.seed}")),
            prices=area_prices(config),
        )
        self.peak_active = 0
        self._width = max(6, len(str(config.patients)))
        self._visitors = round(config.patients * config.bounced_visitors_per_patient)

    @property
    def providers(self) -> list[dict[str, Any]]:
        return [
            {
                "provider_id": p.id,
                "median_response_minutes": p.median_response_minutes,
                "capacity": p.capacity,
            }
            for p in self.world.care.providers
        ]

    # -- arrivals ---------------------------------------------------------------------------
    def _new_patient(self, index: int, day: int) -> Patient:
        w, rng = self.world, self.world.rng
        c = self.config
        area_index = draw_area(rng)
        area = AREAS[area_index]
        place_index = w.people.place(rng)
        place = w.people.places[place_index]
        sex = "male" if rng.random() < area.male_share else "female"
        low, high, mode = area.ages
        age = max(18, min(85, int(rng.triangular(low, high + 1, mode))))
        fate, no_show = draw_fate(rng, c, area)
        hazard, rate, dropout, spend, plan = draw_latent(rng, c, area, w.prices[area.code])
        extra = 0
        while rng.random() >= 1.0 / (1.0 + c.extra_sessions_before_registration):
            extra += 1  # geometric with the configured mean
        number = f"{index + 1:0{self._width}d}"
        patient_id = f"pat_{number}"
        return Patient(
            index=index,
            number=number,
            id=patient_id,
            key=patient_id,
            anonymous_id=f"anon_{rng.getrandbits(64):016x}",
            arrival=self._arrival_time(place.tz_index, day),
            place=place_index,
            tz=place.tz_index,
            area=area_index,
            sex=sex,
            age=age,
            language=w.people.language(rng, place),
            channel=w.people.channel(rng),
            extra_sessions=extra,
            fate=fate,
            no_show=no_show,
            churn_hazard=hazard,
            reorder_rate=rate,
            dropout=dropout,
            spend=spend,
            plan_amount=plan,
            wins_back=rng.random() < c.win_back_rate,
        )

    def _new_visitor(self, index: int, day: int) -> Visitor:
        w, rng = self.world, self.world.rng
        place = w.people.places[w.people.place(rng)]
        area = AREAS[draw_area(rng)]
        page = area.page if rng.random() < 0.7 else one_of(rng, BROWSE_PAGES)
        return Visitor(
            index=index,
            key=f"v{index - self.config.patients + 1:0{self._width}d}",
            anonymous_id=f"anon_{rng.getrandbits(64):016x}",
            arrival=self._arrival_time(place.tz_index, day),
            tz=place.tz_index,
            page=page,
            channel=w.people.channel(rng),
            sessions=1 + (rng.random() < 0.25) + (rng.random() < 0.08),  # assumption
        )

    def _arrival_time(self, tz: int, day: int) -> int:
        cal, rng = self.cal, self.world.rng
        for _ in range(10):
            ts = cal.at_local_day(rng, tz, day)
            if cal.start <= ts < cal.end:
                return ts
        return cal.end - 1 - rng.randrange(HOUR)  # the last local evening runs past the end

    def _arrivals(self) -> Iterator[Patient | Visitor]:
        """Everyone who arrives, in time order; only about one day's arrivals are buffered."""
        cal = self.cal
        weights = cal.acquisition_weights()
        cum = list(accumulate(weights))
        total = cum[-1]
        latest_offset = cal.latest_offset
        pending: list[tuple[int, int, Patient | Visitor]] = []
        patients = visitors = 0
        for i, upto in enumerate(cum):
            day = cal.first_day + i
            share = upto / total
            due_patients = round(self.config.patients * share) - patients
            due_visitors = round(self._visitors * share) - visitors
            for _ in range(due_patients):
                p = self._new_patient(patients, day)
                patients += 1
                heapq.heappush(pending, (p.arrival, p.index, p))
            for _ in range(due_visitors):
                v = self._new_visitor(self.config.patients + visitors, day)
                visitors += 1
                heapq.heappush(pending, (v.arrival, v.index, v))
            # Nobody arriving on a later local day can come before that day's first midnight.
            watermark = (day + 1) * DAY - latest_offset
            while pending and pending[0][0] < watermark:
                yield heapq.heappop(pending)[2]
        while pending:
            yield heapq.heappop(pending)[2]

    # -- the stream -------------------------------------------------------------------------
    def events(self) -> Iterator[dict[str, Any]]:
        w, end, iso = self.world, self.cal.end, self.cal.iso
        push, replace, pop = heapq.heappush, heapq.heapreplace, heapq.heappop
        prefix = f"ev{self.config.seed}-"
        heap: list[tuple[int, int, Iterator[Any], Patient | Visitor, str, dict[str, Any]]] = []
        arrivals = self._arrivals()
        incoming = next(arrivals, None)
        while True:
            if incoming is not None and (not heap or incoming.arrival <= heap[0][0]):
                actor = incoming
                incoming = next(arrivals, None)
                journey: Iterator[Any] = (
                    patient_journey(w, actor)
                    if isinstance(actor, Patient)
                    else visitor_journey(w, actor)
                )
                ts, kind, data = next(journey)
                push(heap, (ts, actor.index, journey, actor, kind, data))
                if len(heap) > self.peak_active:
                    self.peak_active = len(heap)
                continue
            if not heap:
                return
            ts, _, journey, actor, kind, data = heap[0]
            if actor.registered:
                ref = (
                    {"id": actor.key, "anonymous_id": actor.anonymous_id}
                    if kind in _IDENTIFIED_SESSION
                    else {"id": actor.key}
                )
            else:
                ref = {"anonymous_id": actor.anonymous_id}
            yield {
                "id": f"{prefix}{actor.key}-{actor.seq}",
                "type": kind,
                "version": 1,
                "occurred_at": iso(ts),
                "patient": ref,
                "data": data,
            }
            actor.seq += 1
            step = next(journey, None)
            if step is None or step[0] >= end:
                pop(heap)
                if step is not None:
                    journey.close()  # type: ignore[attr-defined]
                self._depart(actor, censored=step is not None)
                continue
            nts = step[0] if step[0] >= ts else ts  # a journey never goes back in time
            replace(heap, (nts, actor.index, journey, actor, step[1], step[2]))

    def _depart(self, actor: Patient | Visitor, *, censored: bool) -> None:
        if self.on_truth is not None and isinstance(actor, Patient):
            self.on_truth(patient_truth(self, actor, censored=censored))


def generate(
    config: SimulationConfig, *, on_truth: TruthSink | None = None
) -> Iterator[dict[str, Any]]:
    """Wire-format events for `config`, ordered by `occurred_at`, all before `config.end`.

    `on_truth`, if given, receives each patient's ground-truth record when the patient leaves
    the simulation (journey over, or next event past the end): see ground_truth.py.
    """
    return Simulation(config, on_truth=on_truth).events()
