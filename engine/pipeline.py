"""SongRequest in, events out: the whole Khala pipeline, stage by stage.

Stages run model-major (every variation's backbone, then every variation's super-res,
then every decode) so each model is loaded once and, unless ``keep_loaded``, freed
before the next one is loaded: one 1.6 B model resident at a time.
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
from engine.stages.backbone import generate_audio_tokens
from engine.stages.codec import decode_codes, load_decoder
from engine.errors import KhalaError
from engine.model.loader import load_transformer
from engine.prompt.template import PromptPair, build_prompts
from engine.request import SAMPLE_RATE, UPSTREAM_TOKEN_CAP, SongRequest, expected_tokens
from engine.events import CancelToken, Event, Log, Song, Stage
from engine.streaming import stream
from engine.stages.superres import expand_codes
from engine.prompt.tokenizer import Tokenizer
from engine.weights.folder import WeightPaths, locate_weights

def resolve_seed(request: SongRequest) -> int:
    return request.seed if request.seed is not None else random.SystemRandom().randrange(2**31)


@dataclass
class _Variation:
    index: int
    seed: int
    timings: dict[str, float] = field(default_factory=dict)
    backbone: Any = None
    codes: torch.Tensor | None = None


class Pipeline:
    """Owns the weights folder, device and dtype; ``generate`` runs one request."""

    def __init__(self, weights_dir: Path | str, *, device: str | None = None, dtype: str | None = None,
                 keep_loaded: bool = False) -> None:
        self.weights_dir = Path(weights_dir)
        self.device = dev.pick_device(device)
        self.dtype = dev.pick_dtype(self.device, dtype)
        self.keep_loaded = keep_loaded
        self._loaded: dict[str, Any] = {}
        self._paths: WeightPaths | None = None
        self._tokenizer: Tokenizer | None = None

    # -- resources -------------------------------------------------------------------
    @property
    def paths(self) -> WeightPaths:
        if self._paths is None:
            self._paths = locate_weights(self.weights_dir)
        return self._paths

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer.from_file(self.paths.tokenizer)
        return self._tokenizer

    def prompts(self, request: SongRequest) -> PromptPair:
        return build_prompts(request, self.tokenizer)

    def _load(self, name: str) -> Any:
        if name in self._loaded:
            return self._loaded[name]
        p = self.paths
        if name == "backbone":
            model = load_transformer(p.backbone, p.backbone_args, self.device, self.dtype)
        elif name == "superres":
            model = load_transformer(p.superres, p.superres_args, self.device, self.dtype)
        else:
            model = load_decoder(p.decoder, p.decoder_config, self.device, dev.pick_decoder_dtype())
        self._loaded[name] = model
        return model

    def _free(self, name: str) -> None:
        if not self.keep_loaded:
            self._loaded.pop(name, None)
            dev.release_memory(self.device)

    def unload(self) -> None:
        self._loaded.clear()
        dev.release_memory(self.device)

    def _generator(self, seed: int) -> torch.Generator:
        gen_device = self.device if self.device.type in ("cuda", "mps") else torch.device("cpu")
        return torch.Generator(device=gen_device).manual_seed(seed)

    # -- the run ---------------------------------------------------------------------
    def generate(self, request: SongRequest, cancel: CancelToken | None = None) -> Iterator[Event]:
        cancel = cancel or CancelToken()
        request.validate()
        prompts = self.prompts(request)
        for note in prompts.truncated:
            yield Log(f"Prompt too long, shortened: {note}")
        base_seed = resolve_seed(request)
        runs = [_Variation(i, base_seed + i) for i in range(request.variations)]
        max_new = request.max_tokens or UPSTREAM_TOKEN_CAP
        estimate = min(expected_tokens(request.minutes), max_new)

        yield from self._timed_stage("load_backbone", runs, cancel, lambda: self._load("backbone"))
        for run in runs:
            yield Stage("backbone", run.index)
            yield from self._backbone(run, prompts, request, max_new, estimate, cancel)
        self._free("backbone")

        yield from self._timed_stage("load_superres", runs, cancel, lambda: self._load("superres"))
        for run in runs:
            yield Stage("superres", run.index)
            yield from self._superres(run, prompts, request, cancel)
        self._free("superres")

        yield from self._timed_stage("load_decoder", runs, cancel, lambda: self._load("decoder"))
        songs = []
        for run in runs:
            yield Stage("decode", run.index)
            songs.append((yield from self._decode(run, cancel)))
        self._free("decoder")
        for run, audio in zip(runs, songs):
            yield Song(audio=audio, sample_rate=SAMPLE_RATE, codes=run.codes.numpy(),
                       metadata=self._metadata(request, prompts, run, audio), variation=run.index)

    def _timed_stage(self, name: str, runs: list[_Variation], cancel: CancelToken,
                     work: Callable[[], Any]) -> Iterator[Event]:
        cancel.check()
        yield Stage(name)
        start = time.perf_counter()
        work()
        elapsed = time.perf_counter() - start
        for run in runs:
            run.timings[name] = elapsed
        cancel.check()

    def _backbone(self, run: _Variation, prompts: PromptPair, request: SongRequest, max_new: int,
                  estimate: int, cancel: CancelToken) -> Iterator[Event]:
        model = self._load("backbone")
        generator = self._generator(run.seed)

        def work(report: Callable[[int, int], None], token: CancelToken) -> Any:
            def on_token(done: int, _cap: int) -> None:
                report(done, max(estimate, done))
            with torch.inference_mode():
                return generate_audio_tokens(model, prompts.backbone_ids, max_new_tokens=max_new,
                                             temperature=request.temperature, top_k=request.top_k,
                                             generator=generator, cancel=token, on_token=on_token)
        run.backbone = yield from self._streamed("backbone", run, cancel, work)
        if run.backbone.coarse.shape[0] == 0:
            raise KhalaError("The model ended the song before making any audio. Try another seed.")
        if run.backbone.dropped:
            yield Log(f"Dropped {run.backbone.dropped} stray token(s) at the end of the backbone stream.")

    def _superres(self, run: _Variation, prompts: PromptPair, request: SongRequest,
                  cancel: CancelToken) -> Iterator[Event]:
        model = self._load("superres")
        generator = self._generator(run.seed)

        def work(report: Callable[[int, int], None], token: CancelToken) -> torch.Tensor:
            with torch.inference_mode():
                return expand_codes(model, prompts.superres_ids, run.backbone.coarse.to(self.device),
                                    top_k=request.top_k_superres, generator=generator, cancel=token,
                                    on_pass=report)
        codes = yield from self._streamed("superres", run, cancel, work)
        run.codes = codes.to("cpu", torch.int64)

    def _decode(self, run: _Variation, cancel: CancelToken) -> Iterator[Event]:
        decoder = self._load("decoder")

        def work(report: Callable[[int, int], None], token: CancelToken) -> np.ndarray:
            audio = decode_codes(decoder, run.codes.to(self.device), cancel=token, on_chunk=report)
            return audio.detach().to("cpu", torch.float32).numpy()
        return (yield from self._streamed("decode", run, cancel, work))

    @staticmethod
    def _streamed(stage: str, run: _Variation, cancel: CancelToken,
                  work: Callable[[Callable[[int, int], None], CancelToken], Any]) -> Iterator[Event]:
        """Run ``work`` while streaming its progress; record its time on ``run``; return its result."""
        result: list[Any] = []
        start = time.perf_counter()
        yield from stream(stage, work, cancel, result)
        run.timings[stage] = time.perf_counter() - start
        return result[0]

    def _metadata(self, request: SongRequest, prompts: PromptPair, run: _Variation,
                  audio: np.ndarray) -> dict[str, Any]:
        bb = run.backbone
        return {
            "request": {**request.to_dict(), "seed": run.seed},
            "seed": run.seed,
            "variation": run.index,
            "tokens": {"backbone_prompt": len(prompts.backbone_ids), "superres_prompt": len(prompts.superres_ids),
                       "generated": bb.generated, "audio_frames": int(bb.coarse.shape[0]),
                       "hit_eos": bool(bb.hit_eos), "dropped": bb.dropped},
            "prompt_truncated": list(prompts.truncated),
            "timings_s": {k: round(v, 3) for k, v in run.timings.items()},
            "seconds": round(audio.shape[-1] / SAMPLE_RATE, 3),
            "sample_rate": SAMPLE_RATE,
            "device": str(self.device),
            "dtype": dev.dtype_name(self.dtype),
            "decoder_dtype": dev.dtype_name(dev.pick_decoder_dtype()),
            "versions": {"khala": engine.__version__, "torch": torch.__version__,
                         "python": platform.python_version()},
        }
