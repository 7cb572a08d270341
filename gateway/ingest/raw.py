"""Raw dead letters: input a source type could not turn into messages (a webhook its function
failed on), kept whole as a dead letter of the source (stage ``raw``) with when and from where
it arrived, until ``gateway dead-letters redrive`` hands it back to the source type's
``redrive`` (see :class:`gateway.SourceType`)."""

from __future__ import annotations

import base64
from datetime import datetime

import msgspec

from gateway.messages import Arrival, format_time


class RawLetter(msgspec.Struct, frozen=True, omit_defaults=True):
    """The body of a raw dead letter: the payload as the source kept it (as text when it is
    UTF-8, so ``gateway dead-letters list --bodies`` shows it readably; else base64) and the
    original arrival, so a redriven message keeps the receivedAt and client address it had."""

    receivedAt: str
    ip: str | None = None
    text: str | None = None
    base64: str | None = None


def raw_letter_body(payload: bytes, arrival: Arrival) -> bytes:
    """The dead letter's body for ``payload`` that arrived at ``arrival``."""
    try:
        letter = RawLetter(arrival.at.isoformat(), arrival.client_ip, text=payload.decode("utf-8"))
    except UnicodeDecodeError:
        letter = RawLetter(arrival.at.isoformat(), arrival.client_ip, base64=base64.b64encode(payload).decode("ascii"))
    return msgspec.json.encode(letter)


def open_raw_letter(body: bytes) -> tuple[bytes, Arrival]:
    """The payload and the arrival a raw letter's body holds.

    Raises:
        ValueError: the body is not a raw letter (msgspec's errors are ValueErrors).
    """
    letter = msgspec.json.decode(body, type=RawLetter)
    at = datetime.fromisoformat(letter.receivedAt)
    if letter.text is not None:
        payload = letter.text.encode("utf-8")
    elif letter.base64 is not None:
        payload = base64.b64decode(letter.base64)
    else:
        raise ValueError("a raw letter without a payload")
    return payload, Arrival(at=at, text=format_time(at), client_ip=letter.ip)
