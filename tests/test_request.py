from __future__ import annotations

import dataclasses

import pytest

from engine.errors import Cancelled, RequestError
from engine.request import SongRequest
from engine.events import CancelToken

GOOD = SongRequest(tags="Pop, Piano", lyrics="la la", minutes=2)


def test_good_request_validates() -> None:
    GOOD.validate()
    SongRequest(description="a calm song", instrumental=True, minutes=0).validate()


@pytest.mark.parametrize("change, word", [
    ({"minutes": 11}, "Duration"), ({"minutes": -1}, "Duration"), ({"minutes": 2.5}, "Duration"),
    ({"temperature": 0.5}, "Temperature"), ({"temperature": 1.5}, "Temperature"),
    ({"top_k": 0}, "Top-k"), ({"top_k": 201}, "Top-k"), ({"top_k_superres": 0}, "Super-res"),
    ({"variations": 5}, "Variations"), ({"seed": -3}, "Seed"), ({"max_tokens": 1}, "Max tokens"),
    ({"tags": "  "}, "one tag, a description or a genre"), ({"lyrics": "\n "}, "lyrics"),
])
def test_out_of_range_fields_are_named(change: dict, word: str) -> None:
    with pytest.raises(RequestError, match=word):
        dataclasses.replace(GOOD, **change).validate()


def test_greedy_temperature_zero_is_allowed() -> None:
    dataclasses.replace(GOOD, temperature=0).validate()


def test_instrumental_needs_no_lyrics() -> None:
    dataclasses.replace(GOOD, lyrics="", instrumental=True).validate()


def test_round_trip_through_dict_ignores_unknown_keys() -> None:
    data = {**GOOD.to_dict(), "from_the_future": 1}
    assert SongRequest.from_dict(data) == GOOD


def test_cancel_token() -> None:
    token = CancelToken()
    token.check()
    assert not token.cancelled
    token.cancel()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.check()


def test_defaults_are_the_upstream_ones() -> None:
    # SPEC §5/§6: temperature 1.0, UI top-k 80, super-res top-k fixed at 10
    r = SongRequest()
    assert (r.temperature, r.top_k, r.top_k_superres) == (1.0, 80, 10)


def test_max_tokens_over_the_model_cap_is_refused() -> None:
    # `khala generate --max-tokens 99999999` once tried to allocate a 25 GB KV cache (traceback)
    from engine.request import UPSTREAM_TOKEN_CAP
    dataclasses.replace(GOOD, max_tokens=UPSTREAM_TOKEN_CAP).validate()
    with pytest.raises(RequestError, match="Max tokens must be from 2 to 23,552; got 23553"):
        dataclasses.replace(GOOD, max_tokens=UPSTREAM_TOKEN_CAP + 1).validate()


def test_every_variation_seed_stays_in_range() -> None:
    # variation i uses seed + i: the last one must still be a seed the request would accept
    dataclasses.replace(GOOD, seed=2**63 - 2, variations=2).validate()
    with pytest.raises(RequestError, match="Seed"):
        dataclasses.replace(GOOD, seed=2**63 - 1, variations=2).validate()
