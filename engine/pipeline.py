"""SongRequest in, events out: the whole Khala pipeline, stage by stage, on the caller's thread.

``Pipeline.generate(request, cancel, continuation=None, preview_every=None)`` is a generator.
Event order (engine.events):

    Log*                                   notes on the prompt (cut lyrics, …), level "warning"
    Stage(load_backbone)                   the backbone (and the decoder, when previews are on)
    Stage(backbone)                        every variation at once, as one batch
      Progress(backbone, tokens, ~total)*  after every 8 tokens; total is the expected length
      Preview*                             when ``preview_every`` is given: variation 0's rough song so far,
                                           float32 [2, frames·2048] (engine.stages.preview); the last
                                           one, after the last token, is the whole rough song
    Stage(load_superres)
    Stage(superres, i), Progress(superres, pass, 62)*     for each variation i
    Stage(load_decoder)
    Stage(decode, i), Progress(decode, chunk, chunks)*    for each variation i
    Song × variations                      in order; metadata is the sidecar (engine.song_file)

A ``Log(level="warning")`` can come between stages: a stage whose output held NaN or inf is
rerun once in a safe dtype (engine.device.safe_dtype) and the song's metadata records it.

Errors: RequestError (the request or continuation; raised before any model loads),
WeightsError / ConfigError (the weights folder), PromptError (the tokenizer), KhalaError (a
stage stayed non-finite in the safe dtype, or made no audio), Cancelled (``cancel``). Nothing
is written here: consumers write each Song with engine.song_file.write_song.

Previews take at most engine.stages.preview.PREVIEW_BUDGET of the backbone's time while it writes; what that held
back is decoded after the last token and timed as ``timings_s.preview_final``.

Stages run model-major, so each model is loaded once and, unless ``keep_loaded``, freed before
the next one is loaded: one 1.6 B model resident at a time.
"""

from __future__ import annotations

import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

import engine
from engine import device as dev
from engine.errors import KhalaError, NonFiniteError
from engine.extend import check_room
from engine.events import (BACKBONE, DECODE, LOAD_BACKBONE, LOAD_DECODER, LOAD_SUPERRES, SUPERRES, CancelToken,
                           Event, Log, Outcome, Progress, Song, Stage)
from engine.model.loader import load_transformer
from engine.prompt.template import PromptPair, build_prompts
from engine.prompt.tokenizer import Tokenizer
from engine.request import SAMPLE_RATE, SAMPLES_PER_FRAME, UPSTREAM_TOKEN_CAP, Continuation, SongRequest, expected_tokens
from engine.stages.backbone import BackboneResult, BackboneRun
from engine.stages.codec import decode_chunks, load_decoder
from engine.stages.preview import Previewer
from engine.stages.splice import decode_continued
from engine.stages.superres import superres_passes
from engine.weights.folder import WeightPaths, locate_weights
from engine.weights.preflight import check_model_files

FRAMES_PER_SECOND = SAMPLE_RATE / SAMPLES_PER_FRAME
OVERFLOW_PEAK = 16.0  # decoded audio this far above full scale is numeric overflow, not music
PREVIEW_FINAL = "preview_final"  # timings key: decoding what the preview budget held back, after the last token


def resolve_seed(request: SongRequest) -> int:
    return request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)


@dataclass
class Plan:
    """A checked request: prompts, seeds and token budget, known before any model loads."""

    request: SongRequest
    prompts: PromptPair
    seeds: list[int]
    max_new: int
    estimate: int
    continuation: Continuation | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def prefix_frames(self) -> int:
        return self.continuation.cut_frame if self.continuation else 0


@dataclass
class _Variation:
    index: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    backbone: BackboneResult | None = None
    codes: torch.Tensor | None = None
    audio: np.ndarray | None = None


class Pipeline:
    """Owns the weights folder, device and dtype; ``generate`` runs one request."""

    def __init__(self, weights_dir: Path | str, *, device: str | None = None, dtype: str | None = None,
                 keep_loaded: bool = False) -> None:
        self.weights_dir = Path(weights_dir)
        self.device = dev.pick_device(device)
        self.dtype = dev.pick_dtype(self.device, dtype)
        self.decoder_dtype = dev.pick_decoder_dtype()
        self.keep_loaded = keep_loaded
        self._loaded: dict[str, Any] = {}
        self._paths: WeightPaths | None = None
        self._run_dtype = {"transformer": self.dtype, "decoder": self.decoder_dtype}
        self._fallbacks: list[dict[str, str]] = []

    # -- resources -------------------------------------------------------------------
    @property
    def paths(self) -> WeightPaths:
        if self._paths is None:
            self._paths = locate_weights(self.weights_dir)
        return self._paths

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(self.paths.tokenizer)

    def prompts(self, request: SongRequest) -> PromptPair:
        return build_prompts(request, self.tokenizer)

    def _load(self, name: str) -> Any:
        dtype = self._run_dtype["decoder" if name == "decoder" else "transformer"]
        model = self._loaded.get(name)
        if model is not None and _dtype_of(model) == dtype:
            return model
        self._free(name, force=True)
        p = self.paths
        if name == "backbone":
            model = load_transformer(p.backbone, p.backbone_args, self.device, dtype)
        elif name == "superres":
            model = load_transformer(p.superres, p.superres_args, self.device, dtype)
        else:
            model = load_decoder(p.decoder, p.decoder_config, self.device, dtype)
        self._loaded[name] = model
        return model

    def _free(self, name: str, force: bool = False) -> None:
        if (force or not self.keep_loaded) and self._loaded.pop(name, None) is not None:
            dev.release_memory(self.device)

    def unload(self) -> None:
        self._loaded.clear()
        dev.release_memory(self.device)

    def _generator(self, seed: int) -> torch.Generator:
        gen_device = self.device if self.device.type in ("cuda", "mps") else torch.device("cpu")
        return torch.Generator(device=gen_device).manual_seed(seed)

    # -- the one check, before any work ------------------------------------------------
    def plan(self, request: SongRequest, continuation: Continuation | None = None) -> Plan:
        """Validate everything that can be known before a model loads; RequestError and friends."""
        request.validate()
        room = UPSTREAM_TOKEN_CAP
        if continuation is not None:
            continuation.validate()
            room = check_room(continuation.cut_frame, request.max_tokens)
        check_model_files(self.paths)  # every file bounded, configs against tensor headers: no torch work
        prompts = self.prompts(request)
        prefix_tokens = 2 * continuation.cut_frame if continuation else 0
        max_new = request.max_tokens or room
        estimate = min(max(expected_tokens(request.minutes) - prefix_tokens, 2), max_new)
        base = resolve_seed(request)
        notes = [f"Prompt too long, shortened: {note}" for note in prompts.truncated]
        return Plan(request, prompts, [base + i for i in range(request.variations)], max_new, estimate,
                    continuation, notes)

    # -- the run ---------------------------------------------------------------------
    def generate(self, request: SongRequest, cancel: CancelToken | None = None, *,
                 continuation: Continuation | None = None, preview_every: float | None = None) -> Iterator[Event]:
        cancel = cancel or CancelToken()
        plan = self.plan(request, continuation)
        self._run_dtype = {"transformer": self.dtype, "decoder": self.decoder_dtype}
        self._fallbacks = []
        for note in plan.notes:
            yield Log(note, "warning")
        runs = [_Variation(i, seed) for i, seed in enumerate(plan.seeds)]

        yield from self._timed_load(LOAD_BACKBONE, runs, cancel, ["backbone"] + (["decoder"] if preview_every else []))
        yield from self._with_safe_dtype("transformer", "backbone",
                                         lambda: self._backbone(plan, runs, cancel, preview_every))
        self._free("backbone")
        self._free("decoder")

        yield from self._timed_load(LOAD_SUPERRES, runs, cancel, ["superres"])
        for run in runs:
            yield Stage(SUPERRES, run.index)
            yield from self._with_safe_dtype("transformer", "superres", lambda run=run: self._superres(plan, run, cancel))
        self._free("superres")

        yield from self._timed_load(LOAD_DECODER, runs, cancel, ["decoder"])
        for run in runs:
            yield Stage(DECODE, run.index)
            yield from self._with_safe_dtype("decoder", "decoder", lambda run=run: self._decode(plan, run, cancel))
        self._free("decoder")
        for run in runs:
            yield Song(audio=run.audio, sample_rate=SAMPLE_RATE, codes=run.codes.numpy(),
                       metadata=self._metadata(plan, run), variation=run.index)

    def _timed_load(self, stage: str, runs: list[_Variation], cancel: CancelToken, names: list[str]) -> Iterator[Event]:
        cancel.check()
        yield Stage(stage)
        start = time.perf_counter()
        for name in names:
            self._load(name)
        for run in runs:
            run.timings[stage] = time.perf_counter() - start
        cancel.check()

    def _with_safe_dtype(self, kind: str, model: str, attempt: Callable[[], Iterator[Event]]) -> Iterator[Event]:
        """Run a stage; if it produced non-finite values, rerun it once in a safe dtype."""
        try:
            yield from attempt()
            return
        except NonFiniteError as error:
            failed = self._run_dtype[kind]
            safe = dev.safe_dtype(self.device, failed)
            if safe is None:
                raise KhalaError(f"{error} Nothing was written.") from None
            self._fallbacks.append({"stage": error.stage, "from": dev.dtype_name(failed), "to": dev.dtype_name(safe),
                                    "where": error.where})
            yield Log(f"{error} Rerunning the {error.stage} stage in {dev.dtype_name(safe)}.", "warning")
            self._free(model, force=True)
            self._run_dtype[kind] = safe
        try:
            yield from attempt()
        except NonFiniteError as error:
            raise KhalaError(f"{error} Even {dev.dtype_name(self._run_dtype[kind])} did not help; "
                             "nothing was written. Please report this with `khala doctor`.") from None

    def _backbone(self, plan: Plan, runs: list[_Variation], cancel: CancelToken,
                  preview_every: float | None) -> Iterator[Event]:
        model = self._load("backbone")
        prefix = None
        if plan.continuation is not None:
            prefix = torch.from_numpy(np.asarray(plan.continuation.codes[:2, :plan.prefix_frames]).T.astype(np.int64))
        request = plan.request
        run = BackboneRun(model, plan.prompts.backbone_ids, generators=[self._generator(r.seed) for r in runs],
                          max_new_tokens=plan.max_new, temperature=request.temperature, top_k=request.top_k,
                          prefix=prefix, progress_total=plan.estimate)
        preview = None
        if preview_every:
            preview = Previewer(self._load("decoder"), preview_every,
                                capacity_frames=plan.prefix_frames + plan.estimate // 2 + 1)
            yield from preview.warm_up()
        yield Stage(BACKBONE)
        start = time.perf_counter()
        if preview is not None:
            preview.start()
        with torch.inference_mode():
            stage = Outcome(run.steps(cancel))
            for event in stage:
                yield event
                if preview is not None and isinstance(event, Progress):
                    yield from preview.maybe(plan.prefix_frames + (event.done + 1) // 2,
                                             lambda: run.coarse_so_far(0), cancel)
        results = stage.result
        elapsed = time.perf_counter() - start
        if preview is not None:
            yield from preview.final(results[0].coarse, cancel)
        for r, result in zip(runs, results):
            if result.coarse.shape[0] <= plan.prefix_frames:
                where = "at the cut, " if plan.continuation is not None else ""
                raise KhalaError(f"The model ended the song {where}before making any new audio. Try another seed"
                                 + (" or a longer duration." if where else "."))
            r.backbone, r.timings[BACKBONE] = result, elapsed
            if preview is not None:
                r.timings[PREVIEW_FINAL] = time.perf_counter() - start - elapsed
            if result.dropped:
                yield Log(f"Dropped {result.dropped} stray token(s) at the end of variation {r.index + 1}.")

    def _superres(self, plan: Plan, run: _Variation, cancel: CancelToken) -> Iterator[Event]:
        model = self._load("superres")
        fixed = None
        if plan.continuation is not None and plan.prefix_frames:
            fixed = torch.from_numpy(np.asarray(plan.continuation.codes[:, :plan.prefix_frames]).astype(np.int64))
        start = time.perf_counter()
        with torch.inference_mode():
            codes = yield from superres_passes(model, plan.prompts.superres_ids, run.backbone.coarse.to(self.device),
                                               top_k=plan.request.top_k_superres, generator=self._generator(run.seed),
                                               cancel=cancel, fixed=fixed)
        run.codes = codes.to("cpu", torch.int64)
        run.timings[SUPERRES] = time.perf_counter() - start

    def _decode(self, plan: Plan, run: _Variation, cancel: CancelToken) -> Iterator[Event]:
        decoder = self._load("decoder")
        start = time.perf_counter()
        codes = run.codes.to(self.device)
        if plan.continuation is None:
            audio = yield from decode_chunks(decoder, codes, cancel=cancel)
        else:  # the parent's audio before the cut, sample for sample (engine/stages/splice.py)
            parent = torch.from_numpy(np.asarray(plan.continuation.codes).astype(np.int64)).to(self.device)
            audio = yield from decode_continued(decoder, codes, parent, plan.prefix_frames, cancel=cancel)
        peak = float(audio.abs().max())
        if peak > OVERFLOW_PEAK:
            raise NonFiniteError("decode", f"peak {peak:.0f}× full scale", dev.dtype_name(self._run_dtype["decoder"]))
        run.audio = audio.numpy()
        run.timings[DECODE] = time.perf_counter() - start

    def _metadata(self, plan: Plan, run: _Variation) -> dict[str, Any]:
        bb = run.backbone
        parent = None
        if plan.continuation is not None:
            cut = plan.continuation.cut_frame
            parent = {"song": plan.continuation.parent, "cut_frame": cut,
                      "cut_seconds": round(cut / FRAMES_PER_SECOND, 3),
                      "frames": int(plan.continuation.codes.shape[1]), "title": plan.continuation.title}
        return {
            "request": {**plan.request.to_dict(), "seed": run.seed},
            "seed": run.seed,
            "variation": run.index,
            "tokens": {"backbone_prompt": len(plan.prompts.backbone_ids),
                       "superres_prompt": len(plan.prompts.superres_ids), "generated": bb.generated,
                       "audio_frames": int(bb.coarse.shape[0]), "prefix_frames": bb.prefix_frames,
                       "hit_eos": bool(bb.hit_eos), "dropped": bb.dropped},
            "prompt_truncated": list(plan.prompts.truncated),
            "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
            "seconds": round(run.audio.shape[-1] / SAMPLE_RATE, 3),
            "sample_rate": SAMPLE_RATE,
            "device": str(self.device),
            "dtype": dev.dtype_name(self.dtype),
            "decoder_dtype": dev.dtype_name(self.decoder_dtype),
            "dtype_fallbacks": list(self._fallbacks),
            "engine": {"kind": "local"},
            "parent": parent,
            "versions": {"khala": engine.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        }


def _dtype_of(model: Any) -> torch.dtype:
    return model.codebooks.dtype if hasattr(model, "codebooks") else model.lm_head.weight.dtype
