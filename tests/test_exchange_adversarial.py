"""Adversarial checks of the redacted samples destinations keep (issue 16 review)."""

from __future__ import annotations

from gateway import Exchange

SECRET = "3f2a9c0d8e7b6a5f4e3d2c1b0a998877"


def test_a_secret_cut_by_the_sample_length_leaves_no_part_of_it() -> None:
    # A long body (a Mixpanel /engage batch repeats the project token in every update) is cut at
    # MAX_BODY_CHARS before the secrets are replaced: a secret that straddles the cut is no
    # longer found, and its first characters stay in the sample shown by /status.
    body = "x" * (Exchange.MAX_BODY_CHARS - 20) + f'"$token":"{SECRET}"' + "y" * 100
    exchange = Exchange.of("POST", "https://api.example.com/engage", body=body, secrets=[SECRET])
    assert SECRET[:8] not in exchange.request, exchange.request[-200:]
