"""Ties the stand-ins to the real protocol.

1. protocol.py against the upstream source itself (Khala-Music-AI/Khala at P.UPSTREAM_COMMIT),
   read with ``ast`` when a copy is at hand: KHALA_UPSTREAM_DIR (a checkout) or the local git
   mirror. Skipped, with the reason, when neither is.
2. The dispatcher stand-in against protocol.py: every answer's fields, statuses and phases,
   and the worker payload it builds.
3. Our worker against protocol.py: /health and the generate answers.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dispatcher_standin import STEPS, FakeDispatcher, Scenario, worker_payload

from engine.remote import protocol as P

MIRROR = Path("/work/.mirror/Khala-Music-AI+Khala/repo")  # where this project's tools keep a git mirror


def upstream(path: str) -> str:
    checkout = os.environ.get("KHALA_UPSTREAM_DIR")
    if checkout:
        file = Path(checkout) / path
        if file.is_file():
            return file.read_text(encoding="utf-8")
        pytest.skip(f"KHALA_UPSTREAM_DIR has no {path}")
    if MIRROR.is_dir():
        out = subprocess.run(["git", "--git-dir", str(MIRROR), "show", f"{P.UPSTREAM_COMMIT}:{path}"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return out.stdout
    pytest.skip(f"no copy of {P.UPSTREAM_REPO} {path} at {P.UPSTREAM_COMMIT[:7]} "
                "(set KHALA_UPSTREAM_DIR to a checkout)")


def tree(path: str) -> ast.Module:
    return ast.parse(upstream(path))


def node(module: ast.Module, name: str) -> ast.AST:
    for n in ast.walk(module):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name:
            return n
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            return n.value
    raise AssertionError(f"upstream has no {name}")


def class_defaults(module: ast.Module, name: str) -> dict[str, Any]:
    return {s.target.id: ast.literal_eval(s.value) for s in node(module, name).body
            if isinstance(s, ast.AnnAssign) and s.value is not None}


def returned_dict_keys(func: ast.AST) -> list[str]:
    for n in ast.walk(func):
        if isinstance(n, ast.Return) and isinstance(n.value, ast.Dict):
            return [ast.literal_eval(k) for k in n.value.keys]
    raise AssertionError("no dict returned")


def call_literals(module: ast.Module, func_name: str) -> set[str]:
    return {n.args[0].value for n in ast.walk(module) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == func_name and n.args and isinstance(n.args[0], ast.Constant)}


# -- 1. protocol.py against upstream ----------------------------------------------------------
def test_dispatcher_body_schema_and_clamps() -> None:
    api = tree(P.DISPATCHER_SOURCE)
    assert class_defaults(api, "GenerateRequest") == P.GENERATE_BODY_DEFAULTS
    clamps = {}
    for n in ast.walk(node(api, "clamp_generate_request")):  # max(lo, min(hi, req.field))
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "max" and isinstance(n.args[1], ast.Call):
            lo, inner = ast.literal_eval(n.args[0]), n.args[1]
            clamps[inner.args[1].attr] = (lo, ast.literal_eval(inner.args[0]))
    assert clamps == {"duration": P.DURATION_CLAMP, "top_k_bb": P.TOP_K_CLAMP, "temperature": P.TEMPERATURE_CLAMP}
    assert ast.literal_eval(node(api, "NUM_TRACKS_PER_JOB")) == P.TRACKS_PER_JOB
    assert ast.literal_eval(node(api, "JOB_TTL_SECONDS")) == P.JOB_TTL_S
    assert ast.literal_eval(node(api, "SUPERRES_TEXT_MODE")) == P.SUPERRES_TEXT_MODE


def test_dispatcher_answers_and_statuses() -> None:
    api = tree(P.DISPATCHER_SOURCE)
    assert returned_dict_keys(node(api, "generate")) == list(P.ACCEPT_FIELDS)
    job = next(n for n in ast.walk(node(api, "Job")) if isinstance(n, ast.FunctionDef) and n.name == "to_dict")
    assert returned_dict_keys(job) == list(P.JOB_FIELDS)
    assert returned_dict_keys(node(api, "_track_to_dict")) == list(P.TRACK_FIELDS)
    assert returned_dict_keys(node(api, "status")) == list(P.STATUS_FIELDS)
    status = next(n for n in ast.walk(node(api, "Job")) if isinstance(n, ast.FunctionDef) and n.name == "status")
    returned = {n.value.value for n in ast.walk(status) if isinstance(n, ast.Return)}
    assert returned == set(P.JOB_STATUSES)
    assigned = {n.value.value for n in ast.walk(api) if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
                and any(isinstance(t, ast.Attribute) and t.attr == "status" for t in n.targets)}
    assert assigned - {"offline", "idle", "busy"} == set(P.TRACK_STATUSES) - set(P.TRACK_RUNNING) | {"generating"}
    assert ast.literal_eval(node(api, "_worker_phase_to_track_status").body[0].value) == P.TRACK_STATUS_OF_PHASE
    timeout = node(api, "_dispatch_to_worker").args
    assert dict(zip([a.arg for a in timeout.args[-len(timeout.defaults):]],
                    [ast.literal_eval(d) for d in timeout.defaults]))["timeout"] == P.TRACK_TIMEOUT_S


def test_worker_payload_is_what_the_dispatcher_builds() -> None:
    api = tree(P.DISPATCHER_SOURCE)
    keys = returned_dict_keys(node(api, "build_worker_params"))
    added = {n.slice.value for n in ast.walk(node(api, "_dispatch_to_worker"))
             if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.ctx, ast.Store)}
    assert keys + sorted(added) == list(P.WORKER_PAYLOAD_FIELDS)
    top_k_sr = next(v for k, v in zip(node(api, "build_worker_params").body[-1].value.keys,
                                      node(api, "build_worker_params").body[-1].value.values) if k.value == "top_k_sr")
    assert ast.literal_eval(top_k_sr) == P.SUPERRES_TOP_K


def test_worker_schema_health_phases_and_answers() -> None:
    wk = tree(P.WORKER_SOURCE)
    assert class_defaults(wk, "GenerateRequest") == P.WORKER_PAYLOAD_DEFAULTS
    assert list(P.HEALTH_FIELDS) == returned_dict_keys(node(wk, "state_snapshot"))[:len(P.HEALTH_FIELDS)]
    assert call_literals(wk, "set_phase") == set(P.WORKER_PHASES)
    assert call_literals(wk, "set_status") == {P.WORKER_IDLE, P.WORKER_BUSY}
    assert class_defaults(wk, "WorkerRuntimeState")["status"] == P.WORKER_INITIALIZING
    assert returned_dict_keys(node(wk, "write_outputs")) == list(P.GENERATE_RESULT_FIELDS)
    busy = next(n.value for n in ast.walk(node(wk, "api_generate")) if isinstance(n, ast.Return)
                and isinstance(n.value, ast.Dict))
    assert ast.literal_eval(busy) == P.BUSY_ANSWER
    source = upstream(P.WORKER_SOURCE)
    assert "{current_length}/{estimated_tokens} tokens" in source and "{step}/{total_steps} layers" in source
    assert '"decoding audio"' in source
    # the dispatcher parses the backbone's detail for its tok/s display: ours must match its pattern
    api = tree(P.DISPATCHER_SOURCE)
    pattern = next(n.args[0].value for n in ast.walk(node(api, "_phase_display")) if isinstance(n, ast.Call)
                   and getattr(n.func, "attr", "") == "match")
    assert re.match(pattern, P.BACKBONE_DETAIL.format(done=1234, total=7235))
    models = {ast.literal_eval(k) for name in ("BACKBONE_MODELS", "SUPERRES_MODELS") for k in node(wk, name).keys}
    assert models == set(P.BACKBONE_MODEL_NAMES + P.SUPERRES_MODEL_NAMES) - {""}
    assert "if int(request.seed_override) > 0 else int(STATE.seed)" in source  # our seed rule


# -- 2. the dispatcher stand-in against protocol.py ---------------------------------------------
def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_standin_answers_carry_the_protocol_fields() -> None:
    with FakeDispatcher(Scenario(queue_polls=2, parallel=False, fail={1: "boom"})) as d:
        assert set(_get(d.url + P.STATUS_PATH)) == set(P.STATUS_FIELDS)
        req = urllib.request.Request(d.url + P.GENERATE_PATH, data=json.dumps({"tags": "Pop"}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            accepted = json.loads(r.read())
        assert set(accepted) == set(P.ACCEPT_FIELDS) and accepted["status"] in P.ACCEPT_STATUSES
        assert accepted["num_tracks"] == P.TRACKS_PER_JOB
        seen_job, seen_track, seen_phase = set(), set(), set()
        for _ in range(40):
            job = _get(d.url + P.JOB_PATH.format(job_id=accepted["job_id"]))
            assert set(job) == set(P.JOB_FIELDS)
            seen_job.add(job["status"])
            for track in job["tracks"]:
                assert set(track) == set(P.TRACK_FIELDS)
                seen_track.add(track["status"])
                seen_phase.add(track["worker_phase"])
    assert seen_job == {"queued", "generating", "pending", "partial"}
    assert seen_track == set(P.TRACK_STATUSES) and seen_phase == set(P.WORKER_PHASES)
    for step in STEPS:  # the stand-in's script moves tracks as the dispatcher maps worker phases
        assert step.status == P.TRACK_STATUS_OF_PHASE.get(step.worker_phase, step.status)


@pytest.mark.parametrize("body", [
    {"mode": "vocal", "prompt_mode": "tags", "prompt": "", "tags": "Pop", "lyrics": "\u201cHi\u201d it\u2019s me\n",
     "duration": 12, "top_k_bb": 0, "temperature": 2.0},
    {"mode": "instrumental", "prompt_mode": "natural", "prompt": "calm rain", "tags": "x", "lyrics": "la",
     "duration": 3, "top_k_bb": 80, "temperature": 0.7},
])
def test_standin_builds_the_dispatchers_worker_payload(body: dict) -> None:
    assert worker_payload(body, 99) == P.dispatcher_worker_payload(body, 99)


# -- 3. our worker against protocol.py ------------------------------------------------------------
def test_our_worker_speaks_the_protocol(tiny_weights: Path, single_torch_thread: None) -> None:
    import io
    from engine.pipeline import Pipeline
    from engine.remote import worker as W

    worker = W.Worker(Pipeline(tiny_weights, device="cpu"), max_tokens=8, log=io.StringIO())
    health = worker.health()
    assert set(P.HEALTH_FIELDS) <= set(health) and health["status"] in P.WORKER_STATUSES
    assert health["phase"] in P.WORKER_PHASES
    job = worker.start(P.dispatcher_worker_payload({"tags": "Pop", "lyrics": "la"}, 5))
    assert worker.start({"tags": "Pop", "lyrics": "la"}) == P.BUSY_ANSWER
    job.done.wait(60)
    assert set(P.GENERATE_RESULT_FIELDS) <= set(job.answer) and job.answer["status"] == P.RESULT_OK
    worker.files.close()
