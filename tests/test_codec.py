"""DAC decoder: config, strict loading, weight-norm folding, Snake, lengths, chunked decode."""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

from engine.stages.codec import (HALO_FRAMES, DacDecoder, DecoderBlock, Snake, chunk_plan, decode_codes, decode_span, expected_decoder_tensors,
                          fold_weight_norm, load_decoder)
from engine.stages.decoder_config import load_decoder_config, parse_decoder_config
from engine.errors import Cancelled, ConfigError, RequestError, WeightsError
from engine.events import CancelToken
from engine.testing.tiny_decoder import tiny_decoder_config, write_tiny_decoder

REAL_CONFIG = {
    "encoder": {"input_channel": 2, "n_filters": 128, "strides": [4, 8, 8, 8], "d_latent": 128},
    "decoder": {"d_latent": 128, "n_filters": 192, "rates": [8, 8, 8, 4], "out_channel": 2},
    "quantizer": {"dim": 128, "codebook_size": 1024, "num_quantizers": 64},
}


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-decoder")
    write_tiny_decoder(folder, seed=3)
    return folder


@pytest.fixture(scope="module")
def state(tiny_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(tiny_dir / "decoder_weights.pt", weights_only=True)


@pytest.fixture(scope="module")
def decoder(tiny_dir: Path) -> DacDecoder:
    return load_decoder(tiny_dir / "decoder_weights.pt", tiny_dir / "decoder_config.yaml", "cpu", torch.float32)


def random_codes(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 1024, (64, frames), generator=torch.Generator().manual_seed(seed))


def load_with(tmp_path: Path, tiny_dir: Path, state: dict, **save_kwargs) -> DacDecoder:
    torch.save(state, tmp_path / "w.pt", **save_kwargs)
    return load_decoder(tmp_path / "w.pt", tiny_dir / "decoder_config.yaml", "cpu", torch.float32)


# ---------------------------------------------------------------- config

def test_real_layout_has_119_decoder_tensors_and_178m_parameters() -> None:
    shapes = expected_decoder_tensors(parse_decoder_config(REAL_CONFIG))
    assert len(shapes) == 119
    params = sum(math.prod(s) for name, s in shapes.items() if not name.endswith(".weight_g"))
    assert round(params / 1e6) == 178
    assert shapes["decoder.model.0.weight_v"] == (3072, 128, 7)
    assert shapes["decoder.model.1.block.1.weight_v"] == (3072, 1536, 16)  # ConvTranspose1d: [in, out, k]
    assert shapes["decoder.model.4.block.4.block.1.weight_v"] == (192, 192, 7)
    assert shapes["decoder.model.5.alpha"] == (1, 192, 1)
    assert shapes["decoder.model.6.weight_g"] == (2, 1, 1)


def test_tiny_file_has_published_names(state: dict) -> None:
    assert sum(k.startswith("decoder.") for k in state) == 119
    assert any(k.startswith("encoder.") for k in state)
    for k in (0, 63):
        assert torch.equal(state[f"quantizer.vq_layer_{k}._codebook.embed"], state[f"quantizer.embed_{k}"])
    assert state["decoder.model.1.block.0.alpha"].shape == (1, 64, 1)
    assert yaml.safe_load(yaml.safe_dump(tiny_decoder_config())) == tiny_decoder_config()


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["decoder"].pop("rates"), "decoder.rates"),
    (lambda c: c["quantizer"].pop("dim"), "quantizer.dim"),
    (lambda c: c.pop("decoder"), "decoder"),
    (lambda c: c["quantizer"].update(codebook_size=512), "quantizer.codebook_size"),
    (lambda c: c["quantizer"].update(num_quantizers=32), "quantizer.num_quantizers"),
    (lambda c: c["decoder"].update(rates=[8, 8, 8, 8]), "decoder.rates"),
    (lambda c: c["decoder"].update(rates=[8, "8", 8, 4]), "decoder.rates"),
    (lambda c: c["decoder"].update(d_latent=64), "decoder.d_latent"),
    (lambda c: c["decoder"].update(out_channel=1), "decoder.out_channel"),
    (lambda c: c["decoder"].update(n_filters=True), "decoder.n_filters"),
])
def test_config_refuses_what_it_cannot_honour(tmp_path: Path, edit, key: str) -> None:
    raw = copy.deepcopy(REAL_CONFIG)
    edit(raw)
    path = tmp_path / "decoder_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=f"'{key}'"):
        load_decoder_config(path)


def test_config_reads_real_values_and_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "decoder_config.yaml"
    path.write_text(yaml.safe_dump(REAL_CONFIG))
    cfg = load_decoder_config(path)
    assert (cfg.n_filters, cfg.rates, cfg.dim, cfg.hop, cfg.encoder_strides) == (192, (8, 8, 8, 4), 128, 2048, (4, 8, 8, 8))
    path.write_text("decoder: [unclosed")
    with pytest.raises(ConfigError, match="YAML"):
        load_decoder_config(path)
    with pytest.raises(ConfigError, match="Cannot read"):
        load_decoder_config(tmp_path / "absent.yaml")


# ---------------------------------------------------------------- maths

@pytest.mark.parametrize("make", [lambda: torch.nn.Conv1d(6, 5, 7), lambda: torch.nn.ConvTranspose1d(6, 5, 16, stride=8)])
def test_folded_weight_norm_equals_pytorch_weight_norm(make) -> None:
    torch.manual_seed(0)
    conv = torch.nn.utils.parametrizations.weight_norm(make(), dim=0)
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(torch.rand_like(conv.parametrizations.weight.original0) + 0.5)
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert g.shape == (v.shape[0], 1, 1)
    torch.testing.assert_close(fold_weight_norm(g, v), conv.weight, rtol=1e-6, atol=1e-7)


def test_loaded_weights_are_folded(decoder: DacDecoder, state: dict) -> None:
    for name in ("decoder.model.0", "decoder.model.2.block.1", "decoder.model.3.block.4.block.3"):
        want = torch._weight_norm(state[name + ".weight_v"], state[name + ".weight_g"], 0)
        torch.testing.assert_close(decoder.get_parameter(name + ".weight"), want)
    assert not any("weight_g" in n or "weight_v" in n or "parametrizations" in n for n, _ in decoder.named_parameters())


def test_snake_formula() -> None:
    snake = Snake(2)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([2.0, 0.5]).view(1, 2, 1))
    x = torch.tensor([[[0.3, -1.2], [0.3, 4.0]]])
    want = [[0.3 + math.sin(0.6) ** 2 / 2.0, -1.2 + math.sin(-2.4) ** 2 / 2.0],
            [0.3 + math.sin(0.15) ** 2 / 0.5, 4.0 + math.sin(2.0) ** 2 / 0.5]]
    torch.testing.assert_close(snake(x), torch.tensor([want]))


def test_snake_tiny_alpha_stays_finite_in_half_precision() -> None:
    # fp16 is the MPS default: 1/(α + 1e-9) overflows it for |α| < ~1.5e-5, while the true value ≈ x + α·x².
    snake = Snake(3)
    with torch.no_grad():
        snake.alpha.copy_(torch.tensor([1e-6, -1e-6, 0.7]).view(1, 3, 1))
    x = torch.tensor([[[1.0, 0.5, -2.0]] * 3])
    want = snake(x)
    got = snake.half()(x.half()).float()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


def reference_decode(state: dict, codes: torch.Tensor, rates=(8, 8, 8, 4)) -> torch.Tensor:
    """SPEC §8 written out functionally from the raw file (unfolded weight norm)."""
    def w(p):
        return torch._weight_norm(state[p + ".weight_v"], state[p + ".weight_g"], 0), state[p + ".bias"]

    def snake(x, p):
        a = state[p + ".alpha"]
        return x + torch.sin(a * x) ** 2 / (a + 1e-9)

    z = sum(state[f"quantizer.vq_layer_{k}._codebook.embed"][codes[k]] for k in range(64)).T[None]
    x = F.conv1d(z, *w("decoder.model.0"), padding=3)
    for i, s in enumerate(rates, start=1):
        p = f"decoder.model.{i}.block"
        x = F.conv_transpose1d(snake(x, p + ".0"), *w(p + ".1"), stride=s, padding=math.ceil(s / 2))
        for j, d in zip((2, 3, 4), (1, 3, 9)):
            q = f"{p}.{j}.block"
            y = F.conv1d(snake(x, q + ".0"), *w(q + ".1"), dilation=d, padding=3 * d)
            x = x + F.conv1d(snake(y, q + ".2"), *w(q + ".3"))
    return F.conv1d(snake(x, "decoder.model.5"), *w("decoder.model.6"), padding=3)[0]


def test_decoder_matches_functional_reference(decoder: DacDecoder, state: dict) -> None:
    codes = random_codes(6, seed=1)
    want = reference_decode(state, codes)
    got = decode_codes(decoder, codes)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert 0.01 < got.abs().max() < 1.0  # tiny weights: audible, finite, no clipping


@pytest.mark.parametrize("frames", [1, 2, 7])
def test_frames_to_samples(decoder: DacDecoder, frames: int) -> None:
    with torch.inference_mode():
        assert decoder(random_codes(frames)).shape == (1, 2, frames * 2048)
    assert decode_codes(decoder, random_codes(frames), chunk=4, overlap=1).shape == (2, frames * 2048)


@pytest.mark.parametrize("stride", [2, 3, 4, 5, 8])
def test_decoder_block_multiplies_length_by_stride(stride: int) -> None:
    with torch.inference_mode():
        assert DecoderBlock(4, 2, stride)(torch.randn(1, 4, 5)).shape == (1, 2, 5 * stride)


# ---------------------------------------------------------------- chunking

def upstream_plan(frames: int, chunk: int, overlap: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, frames)) for s in range(0, frames, chunk - overlap)]


@pytest.mark.parametrize("frames", [1, 480, 1920, 1921, 2400, 2880, 2881, 3360, 3361, 4320, 4321, 4800, 4801, 12917])
def test_chunk_plan_has_no_short_tail(frames: int) -> None:
    plan = chunk_plan(frames)
    assert plan[0][0] == 0 and plan[-1][1] == frames
    assert all(0 < stop - start <= 1920 for start, stop in plan)
    for (_, stop), (start, _) in zip(plan, plan[1:]):
        assert stop - start == 480  # every seam overlaps exactly the crossfade
    if len(plan) > 1:
        assert plan[-1][1] - plan[-1][0] > 480
    assert len(plan) == math.ceil(max(frames - 480, 1) / 1440)


def test_upstream_plan_would_have_a_short_tail_where_ours_does_not() -> None:
    tails = [f for f in range(1, 6000) if 0 < f % 1440 <= 480 and f > 1920]
    assert tails
    for frames in tails:
        ups, ours = upstream_plan(frames, 1920, 480), chunk_plan(frames)
        assert ups[-1][1] - ups[-1][0] <= 480
        assert ours == ups[:-1]


def test_chunk_plan_rejects_bad_sizes() -> None:
    assert chunk_plan(0) == []
    for chunk, overlap in ((0, 0), (10, 6), (10, -1)):
        with pytest.raises(ValueError):
            chunk_plan(100, chunk, overlap)


def test_chunked_decode_matches_whole_decode_away_from_seams(decoder: DacDecoder) -> None:
    frames, chunk, overlap = 200, 64, 28
    codes = random_codes(frames, seed=2)
    whole = decode_codes(decoder, codes, chunk=frames, overlap=0, window=0)
    # Receptive field, measured: which output frames change when one input frame changes.
    moved = codes.clone()
    moved[:, 100] = (moved[:, 100] + 1) % 1024
    diff = (decode_codes(decoder, moved, chunk=frames, overlap=0, window=0) - whole).abs().amax(0).view(frames, 2048).amax(1)
    reach = int((diff > 0).nonzero().max() - 100)
    assert 0 < reach < 12
    plan = chunk_plan(frames, chunk, overlap)
    edges = {e for start, stop in plan for e in (start, stop)} - {0, frames}
    far = torch.tensor([all(abs(f - e) > reach and abs(f + 1 - e) > reach for e in edges) for f in range(frames)])
    chunked = decode_codes(decoder, codes, chunk=chunk, overlap=overlap, window=0).view(2, frames, 2048)
    seam_middle = [s + overlap // 2 for s, _ in plan[1:]]
    assert all(far[f] for f in seam_middle)  # the crossfaded regions are checked too
    torch.testing.assert_close(chunked[:, far], whole.view(2, frames, 2048)[:, far], rtol=1e-4, atol=1e-6)
    assert not torch.allclose(chunked[:, ~far], whole.view(2, frames, 2048)[:, ~far], atol=1e-6)


@pytest.mark.parametrize("window", [16, 37, 64])
def test_windowed_chunk_equals_one_decoder_call(decoder: DacDecoder, window: int) -> None:
    codes = random_codes(150, seed=4)
    with torch.inference_mode():
        z = decoder.embed(codes.unsqueeze(0))
        whole = decoder.decoder(z)
        windowed = decode_span(decoder, z, window=window, halo=HALO_FRAMES)
        blind = decode_span(decoder, z, window=window, halo=0)
    assert windowed.shape == whole.shape == (1, 2, 150 * 2048)
    torch.testing.assert_close(windowed, whole, rtol=1e-5, atol=1e-6)
    assert (blind - whole).abs().max() > 1e-3 * whole.abs().max()  # the halo is what makes it exact


def test_decode_codes_windows_by_default_and_matches_unwindowed(decoder: DacDecoder) -> None:
    codes = random_codes(130, seed=5)
    calls: list[int] = []
    hook = decoder.decoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[-1]))
    try:
        windowed = decode_codes(decoder, codes, chunk=100, overlap=20, window=24, halo=HALO_FRAMES)
    finally:
        hook.remove()
    assert max(calls) <= 24 + 2 * HALO_FRAMES and len(calls) > 2
    torch.testing.assert_close(windowed, decode_codes(decoder, codes, chunk=100, overlap=20, window=0),
                               rtol=1e-5, atol=1e-6)


class ChunkMarker(torch.nn.Module):
    """Stands in for the decoder: every chunk decodes to a constant, its first frame's index."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.codebooks = torch.zeros(1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.arange(codes.shape[-1], dtype=torch.float32).view(1, 1, -1)

    def decoder(self, z: torch.Tensor) -> torch.Tensor:
        return z[..., :1].expand(1, 2, z.shape[-1] * 2048)


def test_crossfade_is_linear_from_earlier_to_later_chunk(decoder: DacDecoder) -> None:
    audio = decode_codes(ChunkMarker(decoder.config), random_codes(20), chunk=8, overlap=2)
    assert chunk_plan(20, 8, 2) == [(0, 8), (6, 14), (12, 20)]
    seam = audio[0, 6 * 2048:8 * 2048]
    assert torch.all(seam[1:] > seam[:-1]) and 0 < seam[0] < 0.01 and 5.99 < seam[-1] < 6
    torch.testing.assert_close(seam + seam.flip(0), torch.full_like(seam, 6.0))  # weights sum to one
    assert torch.all(audio[:, :6 * 2048] == 0) and torch.all(audio[:, 8 * 2048:12 * 2048] == 6)
    assert torch.all(audio[:, 14 * 2048:] == 12)


def test_cancel_and_progress(decoder: DacDecoder) -> None:
    calls: list[tuple[int, int]] = []
    decode_codes(decoder, random_codes(20), chunk=8, overlap=2, on_chunk=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        decode_codes(decoder, random_codes(20), chunk=8, overlap=2, cancel=token)


@pytest.mark.parametrize("codes, match", [
    (torch.full((64, 3), 1024), "1024 at codebook 0, frame 0"),
    (torch.zeros(64, 3, dtype=torch.long).index_put_((torch.tensor([5]), torch.tensor([2])), torch.tensor(-1)),
     "-1 at codebook 5, frame 2"),
    (torch.zeros(63, 3, dtype=torch.long), r"shape \[64, frames\]"),
    (torch.zeros(64, 0, dtype=torch.long), r"shape \[64, frames\]"),
    (torch.zeros(64, 3), "integers"),
])
def test_bad_codes_are_refused(decoder: DacDecoder, codes: torch.Tensor, match: str) -> None:
    with pytest.raises(RequestError, match=match):
        decode_codes(decoder, codes)


class Float64Spy(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                self.seen.add(str(func))
        return out


def test_no_float64_and_other_dtypes(tiny_dir: Path) -> None:
    with Float64Spy() as spy:
        model = load_decoder(tiny_dir / "decoder_weights.pt", tiny_dir / "decoder_config.yaml", "cpu", torch.bfloat16)
        audio = decode_codes(model, random_codes(3), chunk=2, overlap=1)
    assert not spy.seen
    assert model.codebooks.dtype == torch.bfloat16
    assert audio.dtype == torch.float32 and torch.isfinite(audio).all() and audio.abs().max() > 0.01


# ---------------------------------------------------------------- loader strictness

def test_encoder_is_never_built(decoder: DacDecoder, tmp_path: Path, tiny_dir: Path, state: dict) -> None:
    names = [n for n, _ in decoder.named_parameters()] + [n for n, _ in decoder.named_buffers()]
    assert not any("encoder" in n for n in names)
    assert sum(p.numel() for p in decoder.parameters()) == sum(
        t.numel() for k, t in state.items() if k.startswith("decoder.") and not k.endswith("weight_g"))
    broken = {k: (torch.zeros(1) if k.startswith("encoder.") else t) for k, t in state.items()}
    load_with(tmp_path, tiny_dir, broken)  # the encoder's content does not matter
    load_with(tmp_path, tiny_dir, {k: t for k, t in state.items() if not k.startswith("encoder.")})


@pytest.mark.parametrize("name", ["decoder.model.2.block.3.block.1.weight_v", "decoder.model.4.block.0.alpha",
                                  "decoder.model.6.bias", "quantizer.vq_layer_17._codebook.embed"])
def test_missing_tensor_is_named(tmp_path: Path, tiny_dir: Path, state: dict, name: str) -> None:
    broken = dict(state)
    del broken[name]
    broken.pop(name.replace("vq_layer_17._codebook.embed", "embed_17"), None)
    with pytest.raises(WeightsError, match=f"missing tensor '{name}'"):
        load_with(tmp_path, tiny_dir, broken)


@pytest.mark.parametrize("name", ["decoder.model.0.weight_g", "decoder.model.1.block.1.weight_v",
                                  "decoder.model.5.alpha", "quantizer.vq_layer_3._codebook.embed"])
def test_wrong_shape_is_named(tmp_path: Path, tiny_dir: Path, state: dict, name: str) -> None:
    broken = dict(state)
    broken[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    with pytest.raises(WeightsError, match=rf"'{name}' has shape"):
        load_with(tmp_path, tiny_dir, broken)


def test_extra_decoder_tensor_and_training_checkpoint_refused(tmp_path: Path, tiny_dir: Path, state: dict) -> None:
    with pytest.raises(WeightsError, match="unexpected tensor 'decoder.model.7.bias'"):
        load_with(tmp_path, tiny_dir, {**state, "decoder.model.7.bias": torch.zeros(2)})
    with pytest.raises(WeightsError, match="training checkpoint"):
        load_with(tmp_path, tiny_dir, {"generator." + k: t for k, t in state.items()})


def test_either_codebook_name_is_accepted_first_preferred(tmp_path: Path, tiny_dir: Path, state: dict) -> None:
    only_second = {k: t for k, t in state.items() if "vq_layer_" not in k}
    model = load_with(tmp_path, tiny_dir, only_second)
    torch.testing.assert_close(model.codebooks[9], state["quantizer.embed_9"])
    both = {**state, "quantizer.embed_9": torch.zeros_like(state["quantizer.embed_9"])}
    model = load_with(tmp_path, tiny_dir, both)
    torch.testing.assert_close(model.codebooks[9], state["quantizer.vq_layer_9._codebook.embed"])


def test_legacy_torch_save_format_loads(tmp_path: Path, tiny_dir: Path, state: dict, decoder: DacDecoder) -> None:
    model = load_with(tmp_path, tiny_dir, state, _use_new_zipfile_serialization=False)
    torch.testing.assert_close(model.state_dict(), decoder.state_dict())


class NotATensor:
    pass


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle", "list", "missing"])
def test_unreadable_file_is_named(tmp_path: Path, tiny_dir: Path, damage: str) -> None:
    path = tmp_path / "decoder_weights.pt"
    data = (tiny_dir / "decoder_weights.pt").read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"<html>502 Bad Gateway</html>")
    elif damage == "pickle":
        torch.save({"decoder.model.0.weight_g": NotATensor()}, path)
    elif damage == "list":
        torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="decoder_weights.pt") as info:
        load_decoder(path, tiny_dir / "decoder_config.yaml", "cpu", torch.float32)
    assert "Traceback" not in str(info.value) and len(str(info.value)) < 300


def test_config_and_weights_must_match(tmp_path: Path, tiny_dir: Path) -> None:
    shutil.copy(tiny_dir / "decoder_weights.pt", tmp_path)
    raw = tiny_decoder_config()
    raw["decoder"]["n_filters"] = 8
    (tmp_path / "decoder_config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(WeightsError, match="'decoder.model.0.weight_g' has shape"):
        load_decoder(tmp_path / "decoder_weights.pt", tmp_path / "decoder_config.yaml", "cpu", torch.float32)
