"""The model half of ``khala doctor`` (engine.doctor runs it): each model on the CPU in float32, then on
the chosen device and dtype, one model resident at a time; parity, non-finite layers and the dtype
that avoids them, CPU-fallback ops, speed and peak memory, added to the DoctorReport as checks.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import torch

from engine import device as dev
from engine.doctor_probes import (GreedyRun, NonFiniteWatch, PeakMemory, agreement, backbone_parity,
                                  capture_fallback_ops, compare, decode_speed, float32_compute, greedy_steps,
                                  superres_probe)
from engine.doctor_report import (FAIL, GREEDY_TOKENS, PASS, SLOW_SONG_MINUTES, UNSUPPORTED_PATTERN, WARN,
                                  DoctorReport, Parity, grade_decoder, grade_transformer, scrub)
from engine.errors import Cancelled
from engine.events import CancelToken, Event, Log, Progress, Stage, drain
from engine.model.loader import load_transformer
from engine.model.transformer import Transformer
from engine.request import SongRequest, expected_tokens
from engine.stages.codec import load_decoder
from engine.weights.folder import WeightPaths

# The probe's own prompt: no user text ever reaches the report.
PROBE_REQUEST = SongRequest(tags="Pop, Piano, Female Vocals", instrumental=True, minutes=2)
SPEED_POSITION = 1000
SPEED_STEPS = {False: 32, True: 8}  # full, quick
SUPERRES_FRAMES = 32
SUPERRES_PASS = 63  # the last pass: every earlier codebook filled
DECODER_FRAMES = 32
PROBE_SEED = 1234
MAX_LAYERS_LISTED = 20


def safer_dtypes(device: torch.device, dtype: torch.dtype) -> list[torch.dtype]:
    """Wider-ranged dtypes to try when ``dtype`` overflows: bfloat16 (float32's range) where the device
    has it, then float32."""
    order = [torch.bfloat16, torch.float32] if dtype == torch.float16 else [torch.float32]
    if dtype == torch.float32:
        return []
    return [d for d in order if d != torch.bfloat16 or bfloat16_supported(device)]


def bfloat16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "mps":  # macOS 14 or newer
        try:
            return bool(torch.ones(2, device=device, dtype=torch.bfloat16).sum().isfinite())
        except (RuntimeError, TypeError):
            return False
    return True


class ModelProbe:
    """``run()`` yields events and fills ``report``; a stage that fails becomes a failed check."""

    def __init__(self, report: DoctorReport, paths: WeightPaths, device: torch.device, dtype: torch.dtype,
                 decoder_dtype: torch.dtype, cancel: CancelToken, quick: bool) -> None:
        self.report, self.paths, self.device, self.dtype = report, paths, device, dtype
        self.decoder_dtype, self.cancel, self.quick = decoder_dtype, cancel, quick
        self.peak = PeakMemory(device)
        self.nonfinite: dict[str, list[str]] = {}  # model -> layers, in the chosen dtype
        self.reference_nonfinite: list[str] = []
        self.redo: dict[str, Callable[[torch.dtype], list[str]]] = {}  # model -> rerun in a dtype

    def run(self) -> Iterator[Event]:
        from engine.prompt.template import build_prompts
        from engine.prompt.tokenizer import Tokenizer

        try:
            self._memory_check()
        except Exception as error:  # noqa: BLE001 - an estimate we cannot make is no reason to stop
            self.report.add("memory", WARN, self._line(error, "cannot estimate a song's memory"))
        try:
            prompts = build_prompts(PROBE_REQUEST, Tokenizer.from_file(self.paths.tokenizer))
        except Exception as error:  # noqa: BLE001
            self.report.add("prompt", FAIL, self._line(error, "cannot build the probe's prompt"))
            return
        with capture_fallback_ops() as fallback_ops, torch.no_grad():
            yield from self._guarded("backbone parity", self._backbone(prompts.backbone_ids))
            yield from self._guarded("superres parity", self._superres(prompts.superres_ids))
            yield from self._guarded("decoder parity", self._decoder())
            yield from self._guarded("numerics", self._numerics())
        report = self.report
        report.fallback_ops = fallback_ops
        if fallback_ops:
            report.add("cpu fallback ops", WARN, f"{len(fallback_ops)} op(s) ran on the CPU (correct, slower): "
                                                 + ", ".join(fallback_ops[:10]))
        elif self.device.type == "mps":
            report.add("cpu fallback ops", PASS, "every op of the probe ran on the GPU")
        report.peak_memory_gb = self.peak.gb

    # -- helpers
    def _free(self) -> None:
        self.peak.sample()
        gc.collect()
        dev.release_memory(self.device)

    def _guarded(self, name: str, steps: Iterator[Event]) -> Iterator[Event]:
        """Run one stage; any failure but a cancel becomes a failed check with one readable line."""
        try:
            yield from steps
        except (Cancelled, KeyboardInterrupt):
            raise
        except NotImplementedError as error:
            match = UNSUPPORTED_PATTERN.search(str(error))
            op = match.group(1) if match else str(error).splitlines()[0][:200]
            self.report.add(name, FAIL, f"op {op} does not run on {self.device.type} and the CPU fallback is "
                                        "off (PYTORCH_ENABLE_MPS_FALLBACK=1 turns it on)")
        except Exception as error:  # noqa: BLE001 - the doctor reports, it does not crash
            self.report.add(name, FAIL, self._line(error))
        finally:
            self._free()

    def _line(self, error: BaseException, context: str = "") -> str:
        """One bounded line for the report, without user paths."""
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
        line = f"{context + ': ' if context else ''}{type(error).__name__}: {text}"
        return scrub(line, self.paths.backbone.parent)[:300]

    def _once(self, stage: str, fn: Callable[[], Any]) -> Generator[Event, None, Any]:
        """One step of the probe without progress of its own, on the caller's thread: check the
        cancel token, run ``fn``, report it done."""
        self.cancel.check()
        with torch.no_grad():
            result = fn()
        yield Progress(stage, 1, 1)
        return result

    def _transformer(self, path: Path, args: Path, device: torch.device | str, dtype: torch.dtype) -> Transformer:
        model = load_transformer(path, args, device, dtype)
        self.peak.sample()
        return model

    def _reference(self, path: Path, args: Path) -> Transformer:
        """The model on the CPU in its file's dtype (bfloat16: memory-mapped), for float32_compute."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as f:
            name = next(iter(f.keys()))
            stored = f.get_slice(name).get_dtype()
        dtype = {"BF16": torch.bfloat16, "F16": torch.float16}.get(stored, torch.float32)  # widening is exact
        return self._transformer(path, args, "cpu", dtype)

    def _memory_check(self) -> None:
        from engine.memory import GIB as MEM_GIB
        from engine.memory import estimate_peak_bytes, memory_warning
        from engine.model.config import load_config
        from engine.stages.decoder_config import load_decoder_config

        p = self.paths
        shapes = dict(backbone_cfg=load_config(p.backbone_args), superres_cfg=load_config(p.superres_args),
                      decoder_cfg=load_decoder_config(p.decoder_config))
        device, dtype = str(self.device), dev.dtype_name(self.dtype)
        warning = memory_warning(PROBE_REQUEST, device, dtype, **shapes)
        if warning:
            self.report.add("memory", WARN, warning)
            return
        need = estimate_peak_bytes(PROBE_REQUEST, device=device, dtype=dtype, **shapes).peak / MEM_GIB
        have = self.report.machine.get("memory_gb")
        self.report.add("memory", PASS, f"a 2-minute song needs about {need:.1f} GB; this machine has {have} GB")

    # -- backbone
    def _backbone(self, prompt: list[int]) -> Iterator[Event]:
        p, report = self.paths, self.report
        yield Stage("backbone_reference")

        def reference() -> Generator[Event, None, tuple[GreedyRun, list[str]]]:
            model = self._reference(p.backbone, p.backbone_args)
            with torch.no_grad(), float32_compute(model), NonFiniteWatch(model, "backbone") as watch:
                run = yield from greedy_steps(model, prompt, GREEDY_TOKENS, stage="backbone_reference",
                                              cache_dtype=torch.float32, cancel=self.cancel)
            return run, watch.layers()

        ref_run, ref_bad = yield from reference()
        self.reference_nonfinite += ref_bad
        self._free()
        yield Stage("backbone_device")

        def on_device(dtype: torch.dtype, stage: str = "backbone_device"):
            model = self._transformer(p.backbone, p.backbone_args, self.device, dtype)
            with torch.no_grad(), NonFiniteWatch(model, "backbone") as watch:
                run = yield from greedy_steps(model, prompt, GREEDY_TOKENS, stage=stage, forced=ref_run.tokens,
                                              cancel=self.cancel)
            return model, run, watch.layers()

        model, dev_run, bad = yield from on_device(self.dtype)
        self.nonfinite["backbone"] = bad
        self.redo["backbone"] = lambda dtype: drain(on_device(dtype, "safe_dtype"))[2]
        parity = backbone_parity(ref_run, dev_run)
        report.parity["backbone"] = parity
        report.checks.append(grade_transformer("backbone parity", parity, report.dtype))
        yield Stage("speed")
        steps = SPEED_STEPS[self.quick]
        tokens_per_s = yield from self._once("speed", lambda: decode_speed(model, SPEED_POSITION, steps))
        del model
        report.tokens_per_s = tokens_per_s
        minutes = expected_tokens(PROBE_REQUEST.minutes) / tokens_per_s / 60
        took = f"about {minutes:.0f} min" if minutes >= 1 else "under a minute"
        words = (f"{tokens_per_s:.1f} tokens/s at position ~{SPEED_POSITION // 1000} k: the backbone of a "
                 f"2-minute song takes {took}")
        report.add("speed", WARN if minutes > SLOW_SONG_MINUTES else PASS, words)

    # -- super-res
    def _superres(self, text_ids: list[int]) -> Iterator[Event]:
        p, report = self.paths, self.report
        gen = torch.Generator().manual_seed(PROBE_SEED)
        codes = torch.randint(0, 1024, (SUPERRES_FRAMES, SUPERRES_PASS), generator=gen)
        yield Stage("superres_reference")

        def reference():
            model = self._reference(p.superres, p.superres_args)
            with float32_compute(model), NonFiniteWatch(model, "superres") as watch:
                hidden, logits = superres_probe(model, text_ids, codes, SUPERRES_PASS)
            return hidden, logits, watch.layers()

        ref_hidden, ref_logits, ref_bad = yield from self._once("superres_reference", reference)
        self.reference_nonfinite += ref_bad
        self._free()
        yield Stage("superres_device")

        def on_device(dtype: torch.dtype):
            model = self._transformer(p.superres, p.superres_args, self.device, dtype)
            with NonFiniteWatch(model, "superres") as watch:
                hidden, logits = superres_probe(model, text_ids, codes, SUPERRES_PASS)
            return hidden, logits, watch.layers()

        hidden, logits, bad = yield from self._once("superres_device", lambda: on_device(self.dtype))
        self.nonfinite["superres"] = bad
        self.redo["superres"] = lambda dtype: on_device(dtype)[2]
        cosine, err = compare(ref_hidden, hidden)
        matches, ties = agreement(ref_logits, ref_logits.argmax(-1), logits.argmax(-1))
        parity = Parity(cosine, err, SUPERRES_FRAMES, matches, ties)
        report.parity["superres"] = parity
        report.checks.append(grade_transformer("superres parity", parity, report.dtype))

    # -- decoder
    def _decoder(self) -> Iterator[Event]:
        p, report = self.paths, self.report
        yield Stage("decoder_reference")

        def decode(device: torch.device | str, dtype: torch.dtype):
            decoder = load_decoder(p.decoder, p.decoder_config, device, dtype)
            self.peak.sample()
            cfg = decoder.config
            gen = torch.Generator().manual_seed(PROBE_SEED)
            codes = torch.randint(0, cfg.codebook_size, (cfg.num_quantizers, DECODER_FRAMES), generator=gen)
            with NonFiniteWatch(decoder, "decoder") as watch:
                audio = decoder(codes.to(device))[0].float().cpu()
            return audio, watch.layers()

        ref_audio, ref_bad = yield from self._once("decoder_reference", lambda: decode("cpu", torch.float32))
        self.reference_nonfinite += ref_bad
        self._free()
        yield Stage("decoder_device")
        audio, bad = yield from self._once("decoder_device", lambda: decode(self.device, self.decoder_dtype))
        self.nonfinite["decoder"] = bad
        cosine, err = compare(ref_audio, audio)
        parity = Parity(cosine, err)
        report.parity["decoder"] = parity
        report.checks.append(grade_decoder(parity))

    # -- numerics
    def _numerics(self) -> Iterator[Event]:
        report = self.report
        layers = [name for model in ("backbone", "superres", "decoder") for name in self.nonfinite.get(model, [])]
        report.nonfinite_layers = layers[:MAX_LAYERS_LISTED]
        if self.reference_nonfinite:
            report.add("numerics", FAIL, f"non-finite values even in CPU float32, from "
                                         f"{self.reference_nonfinite[0]}: the weight file is damaged")
            return
        if not layers:
            report.add("numerics", PASS, f"no inf or NaN in any layer's output in {report.dtype}")
            return
        where = ", ".join(f"{model} from {bad[0]}" for model, bad in self.nonfinite.items() if bad)
        advice = []
        if self.nonfinite.get("decoder"):
            advice.append("the decoder needs float32 (KHALA_DECODER_DTYPE=float32)")
        transformers = [m for m in ("backbone", "superres") if self.nonfinite.get(m)]
        if transformers:
            yield Stage("safe_dtype")
            for dtype in safer_dtypes(self.device, self.dtype):
                self.cancel.check()
                yield Log(f"trying {dev.dtype_name(dtype)}")
                still_bad = []
                for model in transformers:
                    still_bad += yield from self._once("safe_dtype", lambda m=model, d=dtype: self.redo[m](d))
                    self._free()
                if not still_bad:
                    report.safe_dtype = dev.dtype_name(dtype)
                    break
            advice.append(f"{report.safe_dtype} stays finite (use --dtype {report.safe_dtype})" if report.safe_dtype
                          else "no wider dtype on this device stays finite")
        report.add("numerics", FAIL, f"inf/NaN in {report.dtype} ({where}): a song would be noise or silence; "
                                     + "; ".join(advice))
