"""The configured sources, as ingest finds them: by write key (in constant time), by id and by
type, and the client address of a request (``X-Forwarded-For`` from trusted proxies only)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Mapping

from gateway.components import Filter, FilterChain, RateLimit, Source
from gateway.config import GatewayConfig


def _key_digest(write_key: str) -> bytes:
    return hashlib.sha256(write_key.encode("utf-8", "surrogatepass")).digest()


class SourceDirectory:
    """The sources of one config. Keys are looked up by SHA-256 digest and then compared with
    ``compare_digest``, so the time a lookup takes says nothing useful about a guessed key."""

    def __init__(self, config: GatewayConfig, filters: Mapping[str, Filter]) -> None:
        self._by_key_digest: dict[bytes, tuple[str, Source]] = {}
        for sid, entity in config.sources.items():
            core = entity.core
            rate = None
            if core.rate_limit_events_per_sec is not None:
                burst = core.rate_limit_burst or max(100, math.ceil(core.rate_limit_events_per_sec))
                rate = RateLimit(core.rate_limit_events_per_sec, burst)
            source = Source(
                id=sid,
                type=core.type,
                options=entity.options,
                filters=FilterChain((f, filters[f]) for f in core.filters),
                block_red=core.block_red,
                inventory=core.inventory,
                rate_limit=rate,
            )
            self._by_key_digest[_key_digest(core.write_key)] = (core.write_key, source)
        self.by_id = {source.id: source for _, source in self._by_key_digest.values()}
        self._trusted = [ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies]

    def authenticate(self, write_key: object, source_type: str | None) -> Source | None:
        """The source whose write key this is (of ``source_type`` unless None), or None."""
        if not isinstance(write_key, str) or not write_key:
            return None
        found = self._by_key_digest.get(_key_digest(write_key))
        if found is None:
            return None
        key, source = found
        if not hmac.compare_digest(key.encode("utf-8", "surrogatepass"), write_key.encode("utf-8", "surrogatepass")):
            return None
        return source if source_type is None or source.type == source_type else None

    def of_type(self, source_type: str) -> list[Source]:
        return [source for source in self.by_id.values() if source.type == source_type]

    def is_trusted_proxy(self, address: str | None) -> bool:
        if not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The client's address: the peer, or, when the peer is a trusted proxy, the nearest
        address in ``X-Forwarded-For`` that is not itself a trusted proxy."""
        try:
            peer = str(ipaddress.ip_address(peer or ""))
        except ValueError:
            return None  # a unix socket or a test client: no address to record
        if not forwarded_for or not self._trusted or not self.is_trusted_proxy(peer):
            return peer
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.is_trusted_proxy(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer  # a forged or garbled header: fall back to what we saw
        return peer
