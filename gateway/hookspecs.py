"""Every hook a gateway plugin can implement. This module is the reference for plugin authors.

A plugin is a module (or object) registered under the entry-point group ``gateway``::

    [project.entry-points.gateway]
    my_destination = "my_package"

It implements one or more hooks below with ``@gateway.hookimpl``. Each hook returns a list of
component types; the core collects them, refuses two types with the same name, and builds the
components that the config asks for by ``type``. The core knows no concrete plugin: the built-in
ones in ``plugins/`` are installed and discovered exactly like third-party ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from gateway.components import DestinationType, FilterType, MatcherType, SourceType
    from gateway.privacy.config import CustomMatcher

PROJECT = "gateway"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def gateway_source_types() -> Sequence[SourceType]:
    """Return the source types this plugin provides.

    A source type receives messages over its transport (HTTP routes it contributes through its
    ``blueprint`` factory), finds their source, and hands them to the :class:`gateway.Ingest`
    the factory got: the core validates, completes, rate-limits, filters and stores them, the
    same for every source type, and says what it accepted and rejected. A request must be
    answered with a 2xx only after ``Ingest.store`` returned, since that is when the messages
    are durable. A source type may also give a ``fast_path`` (:class:`gateway.FastPath`): its
    plainest, most frequent requests are then offered to it first, straight from ASGI, and
    whatever it declines reaches its routes unchanged.

    Input a source type cannot turn into messages now (a webhook whose function failed) it
    keeps with ``Ingest.keep_raw``; an operator's redrive hands it back to the type's
    ``redrive`` callable, and the core stores what that returns (see :class:`gateway.SourceType`).

    :returns: A list of :class:`gateway.SourceType`.
    """
    raise NotImplementedError


@hookspec
def gateway_destination_types() -> Sequence[DestinationType]:
    """Return the destination types this plugin provides.

    The core gives each configured destination its own cursor into the ingest log and its own
    worker, which batches records, calls ``Destination.send`` under the configured timeout, and
    retries or dead-letters failed batches. See :class:`gateway.Destination` for the
    delivery and error contract.

    :returns: A list of :class:`gateway.DestinationType`.
    """
    raise NotImplementedError


@hookspec
def gateway_filter_types() -> Sequence[FilterType]:
    """Return the filter types this plugin provides.

    Filters run synchronously on one message at a time, on the hot path: keep them fast and free
    of I/O. A source lists filters that run before a message is stored; a destination lists
    filters that run before it is sent there. A filter returns the message or None
    (:meth:`gateway.Filter.process`), or a :class:`gateway.Verdict` from
    :meth:`~gateway.Filter.apply` to name a drop reason, dead-letter the message on a
    failure, or forward messages into another source.

    :returns: A list of :class:`gateway.FilterType`.
    """
    raise NotImplementedError


@hookspec
def gateway_matcher_types() -> Sequence[MatcherType]:
    """Return the privacy matchers this plugin provides.

    A matcher recognises one kind of personal data by field name and, optionally, by value; the
    privacy stage uses them to classify fields as red, yellow or green.

    :returns: A list of :class:`gateway.MatcherType`.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def gateway_custom_matcher(name: str, config: CustomMatcher) -> MatcherType | None:
    """Build the privacy matcher a ``[privacy.matchers.<name>]`` table of the config asks for.

    The config gives key names (``keys``, matched ``exact`` after normalisation or ``similar``),
    a value ``pattern``, or both, and the ``class`` of what it matches. The first plugin that
    returns a matcher wins; a config with custom matchers and no plugin to build them is
    refused. The built-in matcher plugin implements it with Segment's key normalisation and
    its "similar" rule.

    :param name: The matcher's name (the table's key).
    :param config: The validated table (:class:`gateway.CustomMatcher`).
    :returns: A :class:`gateway.MatcherType`, or None to leave it to another plugin.
    """
    raise NotImplementedError
