"""The framework readers on small trees written in the test: the patterns each one follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telecrm.reports.source_report import analyze_tree


def tree(root: Path, files: dict[str, str]) -> dict[str, dict[str, Any]]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    report = analyze_tree(root)
    return {f"{e['method']} {e['path']}": e for e in report["endpoints"]}


def test_fastapi_routers_nest_across_modules_with_each_prefix(tmp_path: Path) -> None:
    rows = tree(tmp_path, {
        "svc/main.py": "from fastapi import FastAPI\nfrom svc.api import v1\napp = FastAPI()\n"
        "app.include_router(v1.router, prefix='/api')\n",
        "svc/api/v1.py": "from fastapi import APIRouter\nfrom .patients import router as patients\n"
        "router = APIRouter(prefix='/v1')\nrouter.include_router(patients)\n",
        "svc/api/patients.py": "from fastapi import APIRouter, Depends\n"
        "from fastapi.security import HTTPBearer\nbearer = HTTPBearer()\n"
        "router = APIRouter(prefix='/patients')\n"
        "@router.get('/{pid}')\ndef one(pid: str, token=Depends(bearer)): ...\n",
    })  # fmt: skip
    assert list(rows) == ["GET /api/v1/patients/{pid}"]
    assert rows["GET /api/v1/patients/{pid}"]["auth"] == ["bearer"]


def test_flask_http_basic_auth_decorator_is_basic_auth(tmp_path: Path) -> None:
    rows = tree(tmp_path, {
        "app.py": "from flask import Flask\nfrom flask_httpauth import HTTPBasicAuth\n"
        "app = Flask(__name__)\nauth = HTTPBasicAuth()\n"
        "@app.route('/reports/<int:rid>', methods=['GET', 'DELETE'])\n@auth.login_required\n"
        "def report(rid): ...\n",
    })  # fmt: skip
    assert {k: v["auth"] for k, v in rows.items()} == {
        "GET /reports/{rid}": ["basic"],
        "DELETE /reports/{rid}": ["basic"],
    }


def test_express_es_modules_route_chains_and_passport_strategies(tmp_path: Path) -> None:
    rows = tree(tmp_path, {
        "server.mjs": "import express from 'express';\nimport passport from 'passport';\n"
        "import visits from './routes/visits.mjs';\nconst app = express();\n"
        "app.use('/v2', passport.authenticate('jwt', { session: false }), visits);\n"
        "app.post('/login', passport.authenticate('local'), (req, res) => res.end());\n",
        "routes/visits.mjs": "import { Router } from 'express';\nimport * as ctl from '../controllers/visits.mjs';\n"
        "const router = Router();\nrouter.route('/visits/:visitId').get(ctl.show).put(ctl.update);\n"
        "export default router;\n",
        "controllers/visits.mjs": "export function show(req, res) { res.json({}); }\n"
        "export const update = async (request, res) => {\n"
        "  const { symptoms, outcome } = request.body;\n  res.json({ symptoms, outcome });\n};\n",
    })  # fmt: skip
    assert {k: v["auth"] for k, v in rows.items()} == {
        "GET /v2/visits/{visitId}": ["jwt_bearer"],
        "PUT /v2/visits/{visitId}": ["jwt_bearer"],
        "POST /login": ["session"],
    }
    update = rows["PUT /v2/visits/{visitId}"]
    assert {f["path"]: f["catalog_field"] for f in update["fields"]} == {
        "symptoms": "symptoms",
        "outcome": "treatment_outcome",
    }
    assert update["fields"][0]["evidence"] == "controllers/visits.mjs:3"


def test_a_router_mounted_twice_is_listed_under_both_prefixes(tmp_path: Path) -> None:
    rows = tree(tmp_path, {
        "app.js": "const express = require('express');\nconst orders = require('./orders');\n"
        "const app = express();\napp.use('/v1/orders', orders);\napp.use('/v2/orders', orders);\n",
        "orders.js": "const router = require('express').Router();\n"
        "router.get('/', (req, res) => res.json(req.query.cursor));\nmodule.exports = router;\n",
    })  # fmt: skip
    assert list(rows) == ["GET /v1/orders", "GET /v2/orders"]
    assert rows["GET /v2/orders"]["pagination"][0]["name"] == "cursor"


def test_a_python_file_that_does_not_parse_is_a_finding_and_the_rest_is_read(
    tmp_path: Path,
) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "main.py").write_text(
        "from fastapi import FastAPI\napp = FastAPI()\n@app.get('/ok')\ndef ok(): ...\n"
    )
    report = analyze_tree(tmp_path)
    assert [e["path"] for e in report["endpoints"]] == ["/ok"]
    assert [(f["kind"], f["evidence"]) for f in report["findings"]] == [
        ("parse_error", ["broken.py"])
    ]
