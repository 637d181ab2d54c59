"""Which journeys run, at which version, and what activity they listen to.

Every distinct text of a journey file becomes a numbered version in `journey_definitions` the
first time it runs. New entries use the newest version; a patient already inside keeps the
version they entered with (its text is read back from the table), so editing a file never moves
anyone onto a path they were not on.
"""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import Connection, func, select

from telecrm.journeys.definition import Journey, LoadedJourney, parse_journey
from telecrm.journeys.tables import journey_definitions
from telecrm.journeys.validate import load_all
from telecrm.store.upsert import insert_ignoring_conflicts


class JourneyRegistry:
    def __init__(self, loaded: list[LoadedJourney]) -> None:
        self.loaded = {lj.name: lj for lj in loaded}
        self._versions: dict[str, int] = {}
        self._bodies: dict[tuple[str, int], Journey] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, extra_dir: Path | None, templates: set[tuple[str, str]]) -> JourneyRegistry:
        return cls(load_all(extra_dir, templates))

    @property
    def journeys(self) -> list[Journey]:
        return [lj.journey for lj in self.loaded.values()]

    def listened_events(self) -> frozenset[str]:
        """Event types any journey enters, exits, converts or waits on."""
        names: set[str] = set()
        for j in self.journeys:
            if j.entry.event:
                names.add(j.entry.event)
            names.update(j.exit.events)
            if j.goal is not None and j.goal.event:
                names.add(j.goal.event)
            for s in j.steps:
                wait = s.wait_spec
                if wait is not None and wait.event:
                    names.add(wait.event)
        return frozenset(names)

    def listens_to_stages(self) -> bool:
        return any(
            j.entry.stage or j.exit.stages or (j.goal is not None and j.goal.stage)
            for j in self.journeys
        )

    # -- versions -------------------------------------------------------------------------------
    def register(self, conn: Connection, now_us: int) -> dict[str, int]:
        """Make sure every loaded journey's text has a version; {name: current version}."""
        with self._lock:
            for name, lj in self.loaded.items():
                if name in self._versions:
                    continue
                rows = conn.execute(
                    select(journey_definitions.c.version, journey_definitions.c.digest).where(
                        journey_definitions.c.journey == name
                    )
                ).all()
                same = [r.version for r in rows if r.digest == lj.digest]
                if same:
                    version = max(same)
                else:
                    version = max((r.version for r in rows), default=0) + 1
                    insert_ignoring_conflicts(
                        conn,
                        journey_definitions,
                        [
                            {
                                "journey": name,
                                "version": version,
                                "digest": lj.digest,
                                "body": lj.body,
                                "registered_us": now_us,
                            }
                        ],
                        ["journey", "version"],
                    )
                self._versions[name] = version
                self._bodies[(name, version)] = lj.journey
            return dict(self._versions)

    def version_of(self, name: str) -> int:
        return self._versions[name]

    def definition(self, conn: Connection, name: str, version: int) -> Journey:
        """The journey a patient entered with; an older version comes back from the table."""
        key = (name, version)
        found = self._bodies.get(key)
        if found is not None:
            return found
        body = conn.execute(
            select(journey_definitions.c.body).where(
                journey_definitions.c.journey == name, journey_definitions.c.version == version
            )
        ).scalar_one()
        journey, _ = parse_journey(body, f"{name} v{version} (journey_definitions)")
        with self._lock:
            self._bodies[key] = journey
        return journey

    @staticmethod
    def latest_versions(conn: Connection) -> dict[str, int]:
        return {
            r.journey: r.v
            for r in conn.execute(
                select(
                    journey_definitions.c.journey,
                    func.max(journey_definitions.c.version).label("v"),
                ).group_by(journey_definitions.c.journey)
            )
        }
