"""engine.remote.protocol: what we send the dispatcher, what we refuse, what a worker payload becomes."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import RequestError
from engine.prompt.template import build_prompt_texts
from engine.remote import protocol as P
from engine.request import SongRequest

ROOT = Path(__file__).resolve().parents[2]
SUNG = SongRequest(tags="Pop, Piano", lyrics="[Verse]\r\nhello\u2019s world\nla", minutes=3, top_k=120,
                   temperature=0.9, variations=2)


def test_body_for_tags_description_genre_and_instrumental() -> None:
    body = P.generate_body(SUNG)
    assert body == {"mode": "vocal", "prompt_mode": "tags", "prompt": "", "tags": "Pop, Piano",
                    "lyrics": "[Verse]\nhello\u2019s world\nla", "duration": 3, "top_k_bb": 120, "temperature": 0.9}
    assert set(body) == set(P.GENERATE_BODY_FIELDS)
    described = P.generate_body(dataclasses.replace(SUNG, description="A calm song"))
    assert (described["prompt_mode"], described["prompt"], described["tags"]) == ("natural", "A calm song", "")
    genre_only = P.generate_body(dataclasses.replace(SUNG, tags="", genre="Jazz"))
    assert (genre_only["prompt_mode"], genre_only["tags"]) == ("tags", "Jazz")
    inst = P.generate_body(dataclasses.replace(SUNG, instrumental=True))
    assert (inst["mode"], inst["lyrics"]) == ("instrumental", "")


@pytest.mark.parametrize("change, words", [
    ({"seed": 42}, "seed"),
    ({"minutes": 0}, "1 to 10 minutes"),
    ({"temperature": 0.0}, "no greedy"),
    ({"top_k_superres": 20}, "fixes super-res top-k at 10"),
    ({"max_tokens": 100}, "no token cap"),
    ({"variations": 3}, "exactly 2 songs"),
    ({"top_k": 0}, "Top-k"),  # our own range check runs first
])
def test_what_the_server_cannot_do_is_refused_before_sending(change: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words) as info:
        P.check_server_request(dataclasses.replace(SUNG, **change))
    assert len(str(info.value)) < 200


def test_what_the_server_does_differently_is_said() -> None:
    one = P.check_server_request(dataclasses.replace(SUNG, variations=1))
    assert any("always makes 2 songs" in w for w in one)
    assert any("no cancel" in w for w in one)
    two = P.check_server_request(SUNG)
    assert not any("always makes" in w for w in two)
    genre = P.check_server_request(dataclasses.replace(SUNG, description="calm", genre="Jazz"))
    assert any("no genre field" in w for w in genre)


@pytest.mark.parametrize("request_", [
    SUNG,
    dataclasses.replace(SUNG, description="A calm song about rain"),
    dataclasses.replace(SUNG, tags="", genre="Jazz"),
    dataclasses.replace(SUNG, tags="Rock", genre="Jazz"),
    dataclasses.replace(SUNG, instrumental=True, lyrics="ignored"),
    dataclasses.replace(SUNG, lyrics="\uff08chorus\uff09 \u2014\u2014 \u201cyes\u201d\u3002"),
])
def test_the_server_builds_the_prompts_we_would(request_: SongRequest) -> None:
    """SongRequest → body → the dispatcher's payload → a worker's SongRequest: same prompt texts."""
    payload = P.dispatcher_worker_payload(P.generate_body(request_), seed_override=77)
    remote = P.request_from_worker_payload(payload, worker_seed=5, max_tokens=None)
    assert build_prompt_texts(remote) == build_prompt_texts(request_)
    assert (remote.seed, remote.minutes, remote.top_k, remote.temperature) == \
        (77, request_.minutes, request_.top_k, request_.temperature)


def test_dispatcher_clamps_as_upstream() -> None:
    payload = P.dispatcher_worker_payload({"duration": 0, "top_k_bb": 500, "temperature": 3.0, "tags": "x"}, 0)
    assert (payload["duration"], payload["top_k_bb"], payload["temperature"], payload["top_k_sr"]) == (1, 200, 1.4, 10)
    assert set(payload) == set(P.WORKER_PAYLOAD_FIELDS)
    assert P.dispatcher_worker_payload({"mode": "instrumental", "lyrics": "la"}, 0)["language"] == "Instrumental"


def _payload(**fields: object) -> dict:
    return {**P.dispatcher_worker_payload({"tags": "Pop", "lyrics": "la la", "duration": 2}, 0), **fields}


def test_seed_override_and_the_worker_seed() -> None:
    assert P.request_from_worker_payload(_payload(seed_override=1234), worker_seed=9, max_tokens=None).seed == 1234
    assert P.request_from_worker_payload(_payload(seed_override=0), worker_seed=9, max_tokens=None).seed == 9
    assert P.request_from_worker_payload(_payload(seed_override=-3), worker_seed=9, max_tokens=None).seed == 9


def test_operator_cap_cannot_be_raised_by_the_payload() -> None:
    req = P.request_from_worker_payload(_payload(max_tokens=10**6, variations=4), worker_seed=1, max_tokens=64)
    assert (req.max_tokens, req.variations) == (64, 1)


def test_missing_fields_take_the_upstream_worker_defaults() -> None:
    req = P.request_from_worker_payload({"tags": "Pop", "lyrics": "la"}, worker_seed=3, max_tokens=None)
    assert (req.minutes, req.top_k, req.top_k_superres, req.genre, req.instrumental) == (2, 50, 10, "Pop", False)


@pytest.mark.parametrize("fields, words", [
    ({"duration": "3"}, "'duration' must be a whole number"),
    ({"duration": 2.5}, "'duration' must be a whole number"),
    ({"top_k_bb": True}, "'top_k_bb' must be a whole number"),
    ({"temperature": "hot"}, "'temperature' must be a number"),
    ({"tags": ["a"]}, "'tags' must be text"),
    ({"superres_text_mode": "other"}, "superres_text_mode"),
    ({"superres_text_mode": "same_as_backbone", "description": "calm"}, "not supported"),
    ({"backbone_name": "some other model"}, "one backbone"),
    ({"duration": 11}, "Duration"),
    ({"lyrics": ""}, "needs lyrics"),
])
def test_payloads_this_worker_cannot_honour(fields: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words) as info:
        P.request_from_worker_payload(_payload(**fields), worker_seed=1, max_tokens=None)
    assert len(str(info.value)) < 250
    with pytest.raises(RequestError, match="JSON object"):
        P.request_from_worker_payload(["not", "a", "dict"], worker_seed=1, max_tokens=None)


def test_short_server_error_keeps_the_last_line_bounded() -> None:
    trace = "Traceback (most recent call last):\n  File x\nRuntimeError: CUDA out of memory\n\n"
    assert P.short_server_error(trace) == "RuntimeError: CUDA out of memory"
    assert len(P.short_server_error("x" * 5000)) == 200
    assert P.short_server_error(None) == "no reason given"


def test_stage_and_phase_maps_are_inverse_and_cover_every_phase() -> None:
    assert set(P.STAGE_OF_PHASE) | {P.PHASE_IDLE} == set(P.WORKER_PHASES)
    assert {P.PHASE_OF_STAGE[s]: s for s in P.PHASE_OF_STAGE} == P.STAGE_OF_PHASE
    assert set(P.TRACK_STATUS_OF_PHASE) == set(P.STAGE_OF_PHASE)


def test_client_and_protocol_import_no_torch() -> None:
    code = ("import sys, engine.remote.protocol, engine.remote.client\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'PySide6')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
