"""The shipped workflows are what ``scripts/build_workflows.py`` makes from its one description (no
hand edits that the next build would undo; an earlier hand edit had left the script out of date),
UI files directly under ``workflows/`` (the template browser's list), API twins in ``workflows/api/``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import comfy_inprocess as ci

ROOT = Path(__file__).resolve().parent.parent


def test_workflow_files_are_the_builders_output():
    ci.pack()  # the notes' estimates use the pack's host functions
    spec = importlib.util.spec_from_file_location("build_workflows", ROOT / "scripts" / "build_workflows.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    names = set()
    for system in build.SYSTEMS:
        names.add(system["name"])
        ui = json.loads((ROOT / "workflows" / f"{system['name']}.json").read_text())
        api = json.loads((ROOT / "workflows" / "api" / f"{system['name']}_api.json").read_text())
        assert ui == json.loads(json.dumps(build.ui_format(system))), system["name"]
        assert api == json.loads(json.dumps(build.api_format(system))), system["name"]
    assert {p.stem for p in (ROOT / "workflows").glob("*.json")} == names
    assert {p.stem for p in (ROOT / "workflows" / "api").glob("*.json")} == {f"{n}_api" for n in names}
