"""Time `telecrm analyze DIR` on a generated source tree of 2,000 files (Express + FastAPI).

Half the files are Express routers (`routes/rN.js`, two routes each, JWT middleware on one,
`req.body` destructuring and `req.query` paging), mounted by `app.js` through `require()`;
the other half are FastAPI routers (`routers/rN.py`, two routes, a pydantic body model,
`Depends(get_current_user)`), included by `main.py`. Prints JSON.
Run: .venv/bin/python bench/analyze_source.py [--files N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from telecrm.reports.readiness_markdown import render_markdown
from telecrm.reports.source_report import analyze_tree, routes_of
from telecrm.reports.source_tree import walk_tree

EXPRESS_ROUTER = """const express = require('express');
const {{ requireJwt }} = require('../middleware/auth');
const router = express.Router();

router.get('/', (req, res) => {{
  const {{ page, limit, updated_since }} = req.query;
  res.json({{ data: [], page, limit, updated_since }});
}});

router.post('/:id/notes', requireJwt, async (req, res) => {{
  const {{ email, date_of_birth, medications, note{i} }} = req.body;
  res.status(201).json({{ email }});
}});

module.exports = router;
"""
FASTAPI_ROUTER = """from fastapi import APIRouter, Depends
from pydantic import BaseModel

from app.auth import get_current_user

router = APIRouter(prefix="/resource{i}")


class Item{i}(BaseModel):
    email: str
    dob: str
    diagnosis: str
    note{i}: str


@router.get("")
def list_items(cursor: str | None = None, updated_since: str | None = None):
    return []


@router.post("/{{item_id}}")
def create_item(item_id: str, body: Item{i}, user: dict = Depends(get_current_user)):
    return body
"""
AUTH_JS = """const jwt = require('jsonwebtoken');
function requireJwt(req, res, next) { req.user = jwt.verify(req.token, 'k'); next(); }
module.exports = { requireJwt };
"""
AUTH_PY = """import jwt
from fastapi import Depends
from fastapi.security import OAuth2PasswordBearer

scheme = OAuth2PasswordBearer(tokenUrl="token")


def get_current_user(token: str = Depends(scheme)) -> dict:
    return jwt.decode(token, "k", algorithms=["HS256"])
"""


def generate(root: Path, files: int) -> None:
    half = (files - 4) // 2
    (root / "web" / "routes").mkdir(parents=True)
    (root / "web" / "middleware").mkdir()
    (root / "app" / "routers").mkdir(parents=True)
    (root / "web" / "middleware" / "auth.js").write_text(AUTH_JS)
    (root / "app" / "auth.py").write_text(AUTH_PY)
    mounts = []
    includes = []
    for i in range(half):
        (root / "web" / "routes" / f"r{i}.js").write_text(EXPRESS_ROUTER.format(i=i))
        mounts.append(f"app.use('/api/r{i}', require('./routes/r{i}'));")
        (root / "app" / "routers" / f"r{i}.py").write_text(FASTAPI_ROUTER.format(i=i))
        includes.append(f"app.include_router(r{i}.router, prefix='/v1')")
    (root / "web" / "app.js").write_text(
        "const express = require('express');\nconst app = express();\n" + "\n".join(mounts) + "\n"
    )
    imports = "\n".join(f"from app.routers import r{i}" for i in range(half))
    (root / "app" / "main.py").write_text(
        f"from fastapi import FastAPI\n{imports}\napp = FastAPI()\n" + "\n".join(includes) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "generated"
        generate(root, args.files)
        t0 = time.perf_counter()
        walk = walk_tree(root)
        t1 = time.perf_counter()
        routes, _, _ = routes_of(walk)
        t2 = time.perf_counter()
        report = analyze_tree(root)
        t3 = time.perf_counter()
        render_markdown(report)
        t4 = time.perf_counter()
        size = sum(len(f.text) for f in walk.files)
    print(
        json.dumps(
            {
                "files": len(walk.files),
                "bytes": size,
                "routes": len(routes),
                "endpoints": report["summary"]["endpoints"],
                "phi_fields": report["summary"]["phi_fields"],
                "walk_s": round(t1 - t0, 2),
                "parse_and_routes_s": round(t2 - t1, 2),
                "analyze_tree_total_s": round(t3 - t2, 2),
                "markdown_s": round(t4 - t3, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
