"""The upstream Khala server protocol (SPEC §11): field names, ranges, clamps and phases, and
the conversions between it and our SongRequest. Torch-free (the app may import it).

Source: Khala-Music-AI/Khala at ``UPSTREAM_COMMIT``, ``backend/backend_api.py`` (the public
dispatcher: queue, jobs of two tracks) and ``backend/backend_worker.py`` (one GPU worker that
the dispatcher calls). Every constant below names the function or class it was read from.
Upstream uses FastAPI/pydantic; a field missing from a body takes the schema's default.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from engine.errors import RequestError
from engine.events import (BACKBONE, DECODE, LOAD_BACKBONE, LOAD_DECODER, LOAD_SUPERRES, QUEUED,
                           SUPERRES)
from engine.prompt.lyrics import clean_lyrics
from engine.request import DURATION_RANGE, SongRequest

UPSTREAM_REPO = "Khala-Music-AI/Khala"
UPSTREAM_COMMIT = "f3992801722e78890d10470e32d821b52631024e"
DISPATCHER_SOURCE = "backend/backend_api.py"
WORKER_SOURCE = "backend/backend_worker.py"

# -- dispatcher: the public API -------------------------------------------------------------
DEFAULT_DISPATCHER_PORT = 8888  # parse_args --port (run_backend.sh uses API_PORT=8889)
DEFAULT_WORKER_BASE_PORT = 8001  # parse_args --worker-base-port; worker i listens on base + i
GENERATE_PATH = "/generate"
STATUS_PATH = "/status"
JOB_PATH = "/job/{job_id}"
TRACK_WAV_PATH = "/job/{job_id}/track/{index}/wav"
TRACK_MP3_PATH = "/job/{job_id}/track/{index}/mp3"

# class GenerateRequest (dispatcher): the POST /generate body, with pydantic's defaults.
MODE_VOCAL, MODE_INSTRUMENTAL = "vocal", "instrumental"
PROMPT_MODE_TAGS, PROMPT_MODE_NATURAL = "tags", "natural"
GENERATE_BODY_DEFAULTS: dict[str, Any] = {
    "mode": MODE_VOCAL, "prompt_mode": PROMPT_MODE_TAGS, "prompt": "", "tags": "", "lyrics": "",
    "duration": 3, "top_k_bb": 80, "temperature": 1.0,
}
GENERATE_BODY_FIELDS = tuple(GENERATE_BODY_DEFAULTS)

# clamp_generate_request; build_worker_params ("top_k_sr": 10).
DURATION_CLAMP = (1, 10)
TOP_K_CLAMP = (1, 200)
TEMPERATURE_CLAMP = (0.6, 1.4)
SUPERRES_TOP_K = 10
TRACKS_PER_JOB = 2  # NUM_TRACKS_PER_JOB
JOB_TTL_S = 1800  # JOB_TTL_SECONDS: finished jobs are dropped this long after creation
TRACK_TIMEOUT_S = 600.0  # _dispatch_to_worker: httpx read timeout on the worker's POST /generate
HEALTH_TIMEOUT_S = 5.0  # _health_check_loop: httpx timeout of each GET /health
SUPERRES_TEXT_MODE = "same_as_backbone_no_description"  # module constant SUPERRES_TEXT_MODE

# generate(): the answer to POST /generate.
ACCEPT_FIELDS = ("status", "job_id", "num_tracks", "queue_position")
ACCEPT_STATUSES = ("accepted", "queued")
# Job.to_dict, Job.status, _track_to_dict, TrackResult.status.
JOB_FIELDS = ("job_id", "status", "queue_position", "cleaned_lyrics", "tracks", "created_at")
JOB_STATUSES = ("completed", "partial", "generating", "queued", "pending")
JOB_FINISHED = ("completed", "partial")
TRACK_FIELDS = ("index", "status", "progress", "phase_display", "worker_id", "worker_phase",
                "duration_sec", "error")
TRACK_STATUSES = ("queued", "generating", "superres", "decoding", "done", "error")
TRACK_RUNNING = ("generating", "superres", "decoding")
# status(): GET /status.
STATUS_FIELDS = ("total_gpus", "idle_gpus", "active_jobs", "queued_jobs", "workers")

# -- worker: what the dispatcher calls ------------------------------------------------------
HEALTH_PATH = "/health"
DOWNLOAD_PATH = "/download/{filename}"
# state_snapshot: the fields _health_check_loop reads (the snapshot has a few more).
HEALTH_FIELDS = ("status", "phase", "gpu_id", "seed", "progress", "progress_detail")
WORKER_INITIALIZING, WORKER_IDLE, WORKER_BUSY = "initializing", "idle", "busy"
WORKER_STATUSES = (WORKER_INITIALIZING, WORKER_IDLE, WORKER_BUSY)
# set_phase calls in run_generation; _worker_phase_to_track_status maps them onto track statuses.
PHASE_IDLE = "idle"
WORKER_PHASES = (PHASE_IDLE, "loading_backbone", "backbone", "loading_superres", "superres",
                 "loading_decoder", "decoding")
TRACK_STATUS_OF_PHASE = {
    "loading_backbone": "generating", "backbone": "generating",
    "loading_superres": "superres", "superres": "superres",
    "loading_decoder": "decoding", "decoding": "decoding",
}
# Our stage names (engine.events) for the worker phases, and back.
STAGE_OF_PHASE = {
    "loading_backbone": LOAD_BACKBONE, "backbone": BACKBONE,
    "loading_superres": LOAD_SUPERRES, "superres": SUPERRES,
    "loading_decoder": LOAD_DECODER, "decoding": DECODE,
}
PHASE_OF_STAGE = {stage: phase for phase, stage in STAGE_OF_PHASE.items()}
# A track whose worker phase is not known yet ("idle" just after dispatch) is placed by its status.
# (A dispatched track says "generating" before its worker's first phase: loading the backbone.)
STAGE_OF_TRACK_STATUS = {"queued": QUEUED, "generating": LOAD_BACKBONE, "superres": SUPERRES, "decoding": DECODE}
# generate_backbone / generate_superres_manual_projection: the progress_detail formats.
BACKBONE_DETAIL = "{done}/{total} tokens"  # _phase_display parses this one for tok/s
SUPERRES_DETAIL = "{done}/{total} layers"
DECODE_DETAIL = "decoding audio"

# class GenerateRequest (worker): the dispatcher's payload, with the worker's own defaults.
WORKER_PAYLOAD_DEFAULTS: dict[str, Any] = {
    "genre": "Pop", "language": "Chinese", "tags": "", "description": "", "duration": 2, "lyrics": "",
    "backbone_name": "", "superres_name": "", "top_k_bb": 50, "top_k_sr": 10, "temperature": 1.0,
    "superres_text_mode": "same_as_backbone", "raw_user_input": "", "raw_mode": "", "raw_prompt_mode": "",
    "seed_override": 0,
}
WORKER_PAYLOAD_FIELDS = tuple(WORKER_PAYLOAD_DEFAULTS)
LANGUAGE_INSTRUMENTAL = "Instrumental"
# BACKBONE_MODELS / SUPERRES_MODELS: the only model each upstream worker knows ("" = that one).
BACKBONE_MODEL_NAMES = ("", "q01_354k_tag_desc_v0 (0217)")
SUPERRES_MODEL_NAMES = ("", "q01_ft5k_super_v2 (0215)")
# write_outputs: the answer to a successful POST /generate; api_generate: the busy answer.
GENERATE_RESULT_FIELDS = ("status", "mp3_filename", "wav_filename", "duration_sec", "backbone_tokens",
                          "gpu_id", "seed")
RESULT_OK, RESULT_ERROR, RESULT_BUSY = "ok", "error", "busy"
BUSY_ANSWER = {"status": RESULT_BUSY, "error": "Worker is currently busy."}

# Ours must fit inside theirs, or the dispatcher's clamps would change what we send.
assert DURATION_RANGE[0] <= DURATION_CLAMP[0] and DURATION_CLAMP[1] <= DURATION_RANGE[1]


# -- our SongRequest → the dispatcher's POST /generate body -----------------------------------
def check_server_request(request: SongRequest) -> list[str]:
    """What the server cannot do, said before sending: RequestError for a request it cannot
    honour as asked; a list of warnings (plain sentences) for what it will do differently."""
    request.validate()
    lo, hi = DURATION_CLAMP
    if not lo <= request.minutes <= hi:
        raise RequestError(f"The Khala server makes songs of {lo} to {hi} minutes; got {request.minutes}.")
    if request.seed is not None:
        raise RequestError("The Khala server picks its own seeds and takes none; leave the seed empty.")
    lo_t, hi_t = TEMPERATURE_CLAMP
    if not lo_t <= request.temperature <= hi_t:
        raise RequestError(f"The Khala server clamps temperature to {lo_t}..{hi_t} (no greedy 0); "
                           f"got {request.temperature}.")
    lo_k, hi_k = TOP_K_CLAMP
    if not lo_k <= request.top_k <= hi_k:
        raise RequestError(f"The Khala server clamps top-k to {lo_k}..{hi_k}; got {request.top_k}.")
    if request.top_k_superres != SUPERRES_TOP_K:
        raise RequestError(f"The Khala server fixes super-res top-k at {SUPERRES_TOP_K}; "
                           f"got {request.top_k_superres}.")
    if request.max_tokens is not None:
        raise RequestError("The Khala server has no token cap (it stops at the song's end or 23552 tokens); "
                           "leave max tokens empty.")
    if request.variations > TRACKS_PER_JOB:
        raise RequestError(f"The Khala server makes exactly {TRACKS_PER_JOB} songs per request; "
                           f"ask for at most {TRACKS_PER_JOB} variations, got {request.variations}.")
    warnings = []
    if request.variations < TRACKS_PER_JOB:
        warnings.append(f"The Khala server always makes {TRACKS_PER_JOB} songs per request; "
                        f"you get all {TRACKS_PER_JOB}.")
    if request.description.strip() and request.genre.strip():
        warnings.append("The Khala server has no genre field: with a description, its detail pass "
                        "(super-res) runs without the genre.")
    warnings.append("Cancelling only stops waiting: the Khala server has no cancel and finishes the job.")
    return warnings


def generate_body(request: SongRequest) -> dict[str, Any]:
    """The dispatcher's POST /generate body for ``request`` (call ``check_server_request`` first).

    The dispatcher builds the prompt from one text: the description ("natural") or the tags;
    a genre alone goes as the tags, which gives the same prompts as ours (SPEC §5)."""
    if request.description.strip():
        prompt_mode, prompt, tags = PROMPT_MODE_NATURAL, request.description, ""
    else:
        prompt_mode, prompt, tags = PROMPT_MODE_TAGS, "", request.tags if request.tags.strip() else request.genre
    lyrics = "" if request.instrumental else request.lyrics.replace("\r\n", "\n").replace("\r", "\n")
    return {
        "mode": MODE_INSTRUMENTAL if request.instrumental else MODE_VOCAL,
        "prompt_mode": prompt_mode,
        "prompt": prompt,
        "tags": tags,
        "lyrics": lyrics,
        "duration": int(request.minutes),
        "top_k_bb": int(request.top_k),
        "temperature": float(request.temperature),
    }


# -- the dispatcher's own step: body → worker payload (for tests and the docs) -----------------
def _clamp(value: float, bounds: tuple[float, float]) -> Any:
    return max(bounds[0], min(bounds[1], value))


def dispatcher_worker_payload(body: Mapping[str, Any], seed_override: int) -> dict[str, Any]:
    """What the dispatcher sends a worker for ``body`` (generate → clamp_generate_request,
    extract_user_input, resolve_generation_metadata, build_worker_params; _dispatch_to_worker
    adds ``seed_override`` = the worker's /health seed + the track's index)."""
    b = {**GENERATE_BODY_DEFAULTS, **body}
    vocal = b["mode"] == MODE_VOCAL
    user_input = b["tags"] if b["prompt_mode"] == PROMPT_MODE_TAGS else b["prompt"]
    tag_mode = b["prompt_mode"] == PROMPT_MODE_TAGS
    return {
        "genre": "",
        "language": LANGUAGE_INSTRUMENTAL if b["mode"] == MODE_INSTRUMENTAL else "",
        "tags": user_input if tag_mode else "",
        "description": "" if tag_mode else user_input,
        "duration": _clamp(int(b["duration"]), DURATION_CLAMP),
        "lyrics": clean_lyrics(b["lyrics"]) if vocal else "",
        "backbone_name": "",
        "superres_name": "",
        "top_k_bb": _clamp(int(b["top_k_bb"]), TOP_K_CLAMP),
        "top_k_sr": SUPERRES_TOP_K,
        "temperature": _clamp(float(b["temperature"]), TEMPERATURE_CLAMP),
        "superres_text_mode": SUPERRES_TEXT_MODE,
        "raw_user_input": user_input,
        "raw_mode": b["mode"],
        "raw_prompt_mode": b["prompt_mode"],
        "seed_override": int(seed_override),
    }


# -- the worker's side: the dispatcher's payload → our SongRequest ----------------------------
_INT_FIELDS = ("duration", "top_k_bb", "top_k_sr", "seed_override")
_FLOAT_FIELDS = ("temperature",)


def _as_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise RequestError(f"Payload field {name!r} must be a whole number; got {_short(value)}.")
    return int(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def payload_fields(payload: Any) -> dict[str, Any]:
    """The payload with the worker schema's defaults filled in and types checked (RequestError)."""
    if not isinstance(payload, dict):
        raise RequestError("The generate payload must be a JSON object.")
    fields = {**WORKER_PAYLOAD_DEFAULTS, **{k: v for k, v in payload.items() if k in WORKER_PAYLOAD_DEFAULTS}}
    for name in _INT_FIELDS:
        fields[name] = _as_int(name, fields[name])
    for name in _FLOAT_FIELDS:
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RequestError(f"Payload field {name!r} must be a number; got {_short(value)}.")
        fields[name] = float(value)
    for name, value in fields.items():
        if name not in _INT_FIELDS and name not in _FLOAT_FIELDS and not isinstance(value, str):
            raise RequestError(f"Payload field {name!r} must be text; got {_short(value)}.")
    return fields


def request_from_worker_payload(payload: Any, *, worker_seed: int, max_tokens: int | None) -> SongRequest:
    """Our SongRequest for a dispatcher payload, or RequestError naming what this worker cannot do.

    * ``seed_override`` > 0 is the seed (upstream's rule); otherwise ``worker_seed`` (the seed
      this worker's /health reports).
    * ``language`` "Instrumental" makes an instrumental; any other language is dropped from the
      prompt, as upstream's two super-res text modes do.
    * The lyrics arrive cleaned by the dispatcher and our prompt cleans them again; the map is
      idempotent except for full-width '＾' (U+FF3E): upstream '^', twice cleaned "'".
    * ``max_tokens`` is the operator's cap (``khala worker --max-tokens``); no payload field
      can raise it.
    """
    f = payload_fields(payload)
    if f["superres_text_mode"] not in ("same_as_backbone", SUPERRES_TEXT_MODE):
        raise RequestError(f"This worker implements superres_text_mode {SUPERRES_TEXT_MODE!r} only; "
                           f"got {_short(f['superres_text_mode'])}.")
    if f["superres_text_mode"] == "same_as_backbone" and f["description"].strip():
        raise RequestError("This worker's super-res prompt drops the description "
                           f"({SUPERRES_TEXT_MODE!r}); superres_text_mode 'same_as_backbone' with a "
                           "description is not supported.")
    if f["backbone_name"] not in BACKBONE_MODEL_NAMES or f["superres_name"] not in SUPERRES_MODEL_NAMES:
        raise RequestError("This worker has one backbone and one super-res model; leave backbone_name "
                           "and superres_name empty.")
    seed = f["seed_override"] if f["seed_override"] > 0 else worker_seed
    request = SongRequest(
        tags=f["tags"], description=f["description"], genre=f["genre"], lyrics=f["lyrics"],
        instrumental=f["language"] == LANGUAGE_INSTRUMENTAL, minutes=f["duration"],
        temperature=f["temperature"], top_k=f["top_k_bb"], top_k_superres=f["top_k_sr"],
        seed=seed, variations=1, max_tokens=max_tokens,
    )
    request.validate()
    return request


def short_server_error(text: Any, limit: int = 200) -> str:
    """A server's error text cut to one line: upstream workers answer a whole traceback, whose
    last line is the exception itself."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    line = lines[-1] if lines else "no reason given"
    return line if len(line) <= limit else line[: limit - 3] + "..."
