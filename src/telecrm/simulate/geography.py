"""US states for synthetic patients: population weight, IANA timezones and real area codes.

Population: 2020 Census resident counts in thousands (census.gov, 2020 apportionment table;
transcribed and rounded, not in analytics.md). Zones split a state by rough population share,
each with area codes that libphonenumber places in that state (tests/simulate checks it).
`es_share` is the chance a patient there picks Spanish (assumption, higher where the Census
counts more Spanish speakers).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Zone:
    timezone: str
    share: float
    area_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class State:
    code: str
    name: str
    population_k: int
    es_share: float
    zones: tuple[Zone, ...]


def _one(tz: str, *codes: int) -> tuple[Zone, ...]:
    return (Zone(tz, 1.0, codes),)


_E, _C, _M, _P = "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"

STATES: tuple[State, ...] = (
    State("AL", "Alabama", 5024, 0.02, _one(_C, 205, 256, 334, 251)),
    State("AK", "Alaska", 733, 0.02, _one("America/Anchorage", 907)),
    State("AZ", "Arizona", 7152, 0.10, _one("America/Phoenix", 602, 480, 520, 623, 928)),
    State("AR", "Arkansas", 3012, 0.03, _one(_C, 501, 479, 870)),
    State(
        "CA",
        "California",
        39538,
        0.15,
        _one(_P, 213, 310, 323, 415, 510, 408, 619, 858, 916, 714, 818, 909, 949, 559, 805),
    ),
    State("CO", "Colorado", 5774, 0.06, _one(_M, 303, 720, 719, 970)),
    State("CT", "Connecticut", 3606, 0.05, _one(_E, 203, 860, 475)),
    State("DE", "Delaware", 990, 0.03, _one(_E, 302)),
    State("DC", "District of Columbia", 690, 0.04, _one(_E, 202)),
    State(
        "FL",
        "Florida",
        21538,
        0.12,
        (Zone(_E, 0.95, (305, 407, 813, 954, 904, 561, 727)), Zone(_C, 0.05, (850,))),
    ),
    State("GA", "Georgia", 10712, 0.04, _one(_E, 404, 678, 770, 912, 706)),
    State("HI", "Hawaii", 1455, 0.02, _one("Pacific/Honolulu", 808)),
    State("ID", "Idaho", 1839, 0.04, (Zone("America/Boise", 0.85, (208,)), Zone(_P, 0.15, (208,)))),
    State("IL", "Illinois", 12813, 0.06, _one(_C, 312, 773, 630, 847, 217, 708)),
    State(
        "IN",
        "Indiana",
        6786,
        0.03,
        (
            Zone("America/Indiana/Indianapolis", 0.9, (317, 765, 260, 574, 812)),
            Zone(_C, 0.1, (219,)),
        ),
    ),
    State("IA", "Iowa", 3190, 0.02, _one(_C, 515, 319, 563, 712)),
    State("KS", "Kansas", 2938, 0.04, _one(_C, 316, 913, 785, 620)),
    State(
        "KY",
        "Kentucky",
        4506,
        0.02,
        (
            Zone(_E, 0.35, (859, 606)),
            Zone("America/Kentucky/Louisville", 0.35, (502,)),
            Zone(_C, 0.30, (270,)),
        ),
    ),
    State("LA", "Louisiana", 4658, 0.03, _one(_C, 504, 225, 318, 337)),
    State("ME", "Maine", 1362, 0.01, _one(_E, 207)),
    State("MD", "Maryland", 6177, 0.04, _one(_E, 410, 301, 443, 240)),
    State("MA", "Massachusetts", 7030, 0.05, _one(_E, 617, 508, 781, 978, 413)),
    State("MI", "Michigan", 10077, 0.02, _one("America/Detroit", 313, 248, 616, 517, 734)),
    State("MN", "Minnesota", 5706, 0.02, _one(_C, 612, 651, 763, 952, 507)),
    State("MS", "Mississippi", 2961, 0.02, _one(_C, 601, 662, 228)),
    State("MO", "Missouri", 6155, 0.02, _one(_C, 314, 816, 417, 573, 636)),
    State("MT", "Montana", 1084, 0.02, _one(_M, 406)),
    State("NE", "Nebraska", 1962, 0.04, (Zone(_C, 0.9, (402, 531)), Zone(_M, 0.1, (308,)))),
    State("NV", "Nevada", 3105, 0.10, _one(_P, 702, 775, 725)),
    State("NH", "New Hampshire", 1378, 0.01, _one(_E, 603)),
    State("NJ", "New Jersey", 9289, 0.08, _one(_E, 201, 973, 732, 908, 609, 856)),
    State("NM", "New Mexico", 2118, 0.15, _one(_M, 505, 575)),
    State(
        "NY",
        "New York",
        20201,
        0.08,
        _one(_E, 212, 718, 917, 347, 516, 631, 518, 585, 716, 315, 914, 646),
    ),
    State("NC", "North Carolina", 10439, 0.04, _one(_E, 704, 919, 336, 910, 828, 252, 980)),
    State("ND", "North Dakota", 779, 0.01, (Zone(_C, 0.8, (701,)), Zone(_M, 0.2, (701,)))),
    State("OH", "Ohio", 11799, 0.02, _one(_E, 216, 614, 513, 330, 419, 440, 937)),
    State("OK", "Oklahoma", 3959, 0.04, _one(_C, 405, 918, 580)),
    State("OR", "Oregon", 4237, 0.05, _one(_P, 503, 541, 971)),
    State("PA", "Pennsylvania", 13003, 0.03, _one(_E, 215, 267, 412, 610, 717, 570, 814, 724)),
    State("RI", "Rhode Island", 1097, 0.06, _one(_E, 401)),
    State("SC", "South Carolina", 5119, 0.02, _one(_E, 803, 843, 864)),
    State("SD", "South Dakota", 887, 0.01, (Zone(_C, 0.75, (605,)), Zone(_M, 0.25, (605,)))),
    State(
        "TN",
        "Tennessee",
        6911,
        0.02,
        (Zone(_C, 0.65, (615, 901, 931, 731)), Zone(_E, 0.35, (865, 423))),
    ),
    State(
        "TX",
        "Texas",
        29146,
        0.15,
        (
            Zone(_C, 0.97, (214, 281, 512, 713, 817, 210, 972, 832, 469, 956)),
            Zone(_M, 0.03, (915,)),
        ),
    ),
    State("UT", "Utah", 3272, 0.04, _one(_M, 801, 385, 435)),
    State("VT", "Vermont", 643, 0.01, _one(_E, 802)),
    State("VA", "Virginia", 8631, 0.04, _one(_E, 703, 757, 804, 540, 571, 434)),
    State("WA", "Washington", 7705, 0.05, _one(_P, 206, 253, 425, 360, 509)),
    State("WV", "West Virginia", 1794, 0.01, _one(_E, 304, 681)),
    State("WI", "Wisconsin", 5894, 0.03, _one(_C, 414, 608, 920, 262, 715)),
    State("WY", "Wyoming", 577, 0.03, _one(_M, 307)),
)

# Every timezone used, in a fixed order: the clock keeps one UTC-offset table per entry.
TIMEZONES: tuple[str, ...] = tuple(
    sorted({zone.timezone for state in STATES for zone in state.zones})
)


@dataclass(frozen=True, slots=True)
class Place:
    """A state and one of its zones, flattened so a patient draw is one weighted choice."""

    state: State
    timezone: str
    tz_index: int
    area_codes: tuple[int, ...]


def places() -> tuple[tuple[Place, ...], tuple[float, ...]]:
    """Every (state, zone) with its share of the US population, for `random.choices`."""
    out: list[Place] = []
    weights: list[float] = []
    for state in STATES:
        for zone in state.zones:
            out.append(Place(state, zone.timezone, TIMEZONES.index(zone.timezone), zone.area_codes))
            weights.append(state.population_k * zone.share)
    return tuple(out), tuple(weights)
