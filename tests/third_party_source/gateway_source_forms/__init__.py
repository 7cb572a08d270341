"""An example third-party source, written only against ``gateway.__all__``: an HTML form posted
to ``/forms/<source id>`` becomes a ``Form Submitted`` track call (or the event the source
names), its fields the properties, the field ``user_id_field`` names the userId.

The form carries the source's write key in a ``token`` field (or ``X-Form-Token``). The core
does the rest: validation, server fields, the source's rate limit, its filters, privacy, the
durable append; this module only turns a form into a candidate message and answers.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from quart import Blueprint, Response, request

from gateway import (
    Candidate,
    ComponentConfig,
    Ingest,
    SourceType,
    error_response,
    hookimpl,
    json_response,
    read_body,
)

TYPE_NAME = "forms"


class FormsConfig(ComponentConfig):
    """``[sources.<id>]`` options of a forms source."""

    event: str = "Form Submitted"
    #: The form field that holds the user's id (the anonymousId is the form's ``visitor`` field).
    user_id_field: str = "email"


def make_blueprint(ingest: Ingest) -> Blueprint:
    bp = Blueprint(TYPE_NAME, __name__)

    @bp.post("/forms/<source_id>")
    async def submit(source_id: str) -> Response:
        body = await read_body(request, ingest.limits.max_request_bytes)
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        token = request.headers.get("X-Form-Token") or fields.pop("token", None)
        source = ingest.authenticate(token, TYPE_NAME)
        if source is None or source.id != source_id:
            return error_response(401, "invalid_token", "unknown or missing form token")
        options: FormsConfig = source.options
        message = {
            "event": options.event,
            "userId": fields.pop(options.user_id_field, None) or None,
            "anonymousId": fields.pop("visitor", None) or None,
            "properties": fields,
            "context": {"userAgent": request.headers.get("User-Agent", "")},
        }
        if message["userId"] is None:
            del message["userId"]
        if message["anonymousId"] is None:
            del message["anonymousId"]
        arrival = ingest.arrival(request.remote_addr, request.headers.get("X-Forwarded-For"))
        outcome, rejected = await ingest.ingest([Candidate(message, "track")], arrival, source=source)
        if rejected:  # the core counted it; the form's sender hears why
            return error_response(400, rejected[0].code, rejected[0].message)
        return json_response({"success": True, "stored": outcome.stored, "duplicates": outcome.duplicates})

    return bp


@hookimpl
def gateway_source_types() -> list[SourceType]:
    return [
        SourceType(
            name=TYPE_NAME,
            config_type=FormsConfig,
            blueprint=make_blueprint,
            description="HTML form posts as track calls (an example third-party source)",
        )
    ]
