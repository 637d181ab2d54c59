"""docs/api.md's role table says what security/roles.py does, field by field."""

from __future__ import annotations

import re
from pathlib import Path

from telecrm.domain.fields import DATA_POINTS, fields_of
from telecrm.security.roles import Role, visible_fields

DOC = Path(__file__).parents[2] / "docs" / "api.md"
_NAMES = re.compile(r"`([a-z0-9_]+)`")


def _table() -> dict[str, list[str]]:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("<!-- role-table")
    block = text[start : text.index("<!-- end role-table -->")]
    rows = [line for line in block.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[2:] == [r.value for r in Role]
    return {
        cells[0]: cells[1:]
        for cells in ([c.strip() for c in row.strip("|").split("|")] for row in rows[1:])
    }


def test_the_role_table_lists_every_data_point_with_its_catalog_fields() -> None:
    table = _table()
    assert list(table) == [dp.title for dp in DATA_POINTS]
    for dp in DATA_POINTS:
        assert _NAMES.findall(table[dp.title][0]) == [f.name for f in fields_of(dp.key)]


def test_each_cell_says_what_the_role_sees_of_the_data_point() -> None:
    table = _table()
    for dp in DATA_POINTS:
        names = {f.name for f in fields_of(dp.key)}
        for role, cell in zip(Role, table[dp.title][1:], strict=True):
            usual = names & visible_fields(role)
            glass = names & visible_fields(role, break_glass=True)
            where = f"{dp.title} / {role.value}: {cell!r}"
            if cell == "yes":
                assert usual == names, where
            elif cell == "—":
                assert not glass, where
            elif cell == "break-glass":
                assert not usual and glass == names, where
            else:
                assert set(_NAMES.findall(cell.split(";")[0])) == usual, where
                assert ("break-glass" in cell) == (glass > usual), where
