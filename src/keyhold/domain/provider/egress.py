"""The egress policy: where the server may send the HTTP requests it makes for providers.

Provider URLs are chosen by administrators, so without a policy the server could be
pointed at its own network (cloud metadata, databases, admin ports). A destination is
allowed when

- the scheme is https; plain http only to a loopback host (`localhost`, 127.0.0.0/8,
  ::1) and only when `allow_loopback_http` is on (development and tests);
- the URL carries no user name or password;
- the port is 443, unless an allowlisted `host:port` names it (or, with
  `allow_loopback_http`, the host is loopback);
- every address the host resolves to is public: not private, loopback, link-local,
  unique-local, shared (CGNAT), multicast, unspecified, documentation, benchmarking or
  otherwise reserved, also when an IPv4 address hides inside an IPv6 one (mapped, 6to4,
  NAT64) — unless an allowlisted network contains it or an allowlisted host names it.

`check_url` is the part that needs no name resolution (used at registration and before
each request); `check_address` is applied to each address at connect time.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from keyhold.domain.provider.oauth import ProviderUnreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HTTPS_PORT = 443
LOOPBACK_NAME = "localhost"

_REFUSED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        # IPv4 special-purpose ranges (IANA registry) and multicast/reserved space
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT); some clouds' metadata
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local; the usual cloud metadata address
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        # IPv6
        "::/8",  # unspecified, loopback, IPv4-compatible and -mapped
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "fc00::/7",  # unique-local; some clouds' metadata
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class EgressRefused(ProviderUnreachable):
    """A provider URL, or an address its host resolves to, is outside the egress policy.
    The message names the host and the rule, never a credential."""


@dataclass(frozen=True, slots=True)
class Destination:
    scheme: str
    host: str  # lower-case, ASCII (IDNA), without brackets
    port: int


def normal_host(host: str) -> str:
    """The form hosts are compared in: lower-case ASCII (IDNA for other names), without
    IPv6 brackets or a trailing dot. Raises ValueError for a name that is not valid."""
    host = host.strip("[]").rstrip(".").lower()
    if host.isascii():
        return host
    return idna.encode(host).decode("ascii")  # IDNA 2008 as httpx encodes it, no mapping


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """`localhost` or a loopback literal: names that mean this machine by definition."""
    address = literal_address(host)
    return host == LOOPBACK_NAME if address is None else _is_loopback(address)


def _is_loopback(address: IPAddress) -> bool:
    return _unwrapped(address)[0].is_loopback


def _unwrapped(address: IPAddress) -> tuple[IPAddress, ...]:
    """The address and any IPv4 address carried inside it. An IPv4-mapped address is
    only its IPv4 address: that is where a connection to it goes."""
    if isinstance(address, ipaddress.IPv4Address):
        return (address,)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    inner: list[IPAddress] = [address]
    if address.sixtofour is not None:
        inner.append(address.sixtofour)
    if address in _NAT64:
        inner.append(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
    return tuple(inner)


def is_public(address: IPAddress) -> bool:
    return all(
        candidate.is_global and not any(candidate in net for net in _REFUSED_NETWORKS)
        for candidate in _unwrapped(address)
    )


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    allow_loopback_http: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[tuple[str, int]] = frozenset()  # (normal host, port)

    @classmethod
    def from_entries(cls, entries: Iterable[str], *, allow_loopback_http: bool) -> EgressPolicy:
        """Entries are CIDRs or addresses (`10.1.0.0/16`, `fd00::5`) whose addresses may
        be reached on port 443, or `host[:port]` (`idp.corp.example:8443`,
        `[fd00::5]:8443`; port 443 when absent) that may be reached whatever it resolves
        to. Raises ValueError naming a malformed entry."""
        networks: list[IPNetwork] = []
        hosts: set[tuple[str, int]] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            hosts.add(_host_port(entry))
        return cls(allow_loopback_http, tuple(networks), frozenset(hosts))

    def check_url(self, url: str) -> Destination:
        """The static part of the policy; raises EgressRefused."""
        try:
            parts = urlsplit(url)
            port = parts.port
            host = normal_host(parts.hostname or "")
        except ValueError as exc:  # a bad port or IPv6 literal, a name IDNA refuses
            raise EgressRefused("the URL cannot be parsed") from exc
        if not host:
            raise EgressRefused("the URL names no host")
        if parts.username is not None or parts.password is not None:
            raise EgressRefused("the URL carries a user name or password")
        loopback_allowed = self.allow_loopback_http and is_loopback_host(host)
        if parts.scheme == "http":
            if not loopback_allowed:
                raise EgressRefused("plain http is refused; use https")
        elif parts.scheme != "https":
            raise EgressRefused(f"the scheme {parts.scheme!r} is refused; use https")
        default_port = HTTPS_PORT if parts.scheme == "https" else 80
        destination = Destination(parts.scheme, host, default_port if port is None else port)
        named = (host, destination.port) in self.allowed_hosts
        if destination.port != HTTPS_PORT and not (named or loopback_allowed):
            raise EgressRefused(f"port {destination.port} is refused; only 443 is allowed")
        if not named and not loopback_allowed:
            address = literal_address(host)
            if host == LOOPBACK_NAME or (address is not None and not self._reachable(address)):
                raise EgressRefused(f"{host} is not a public address")
        return destination

    def check_address(self, host: str, port: int, address: IPAddress) -> None:
        """Whether a connection for `host:port` may go to `address`; raises EgressRefused.
        The port is checked again here, where the connection is made, so that no
        difference between two URL parsers can open another one."""
        host = normal_host(host)
        if (host, port) in self.allowed_hosts:
            return
        loopback_allowed = self.allow_loopback_http and is_loopback_host(host)
        if port != HTTPS_PORT and not loopback_allowed:
            raise EgressRefused(f"port {port} is refused; only 443 is allowed")
        if self._reachable(address) or (loopback_allowed and _is_loopback(address)):
            return
        raise EgressRefused(f"{host} resolves to {address}, which is not a public address")

    def _reachable(self, address: IPAddress) -> bool:
        candidates = {address, *_unwrapped(address)}
        allowed = any(
            candidate in network
            for candidate in candidates
            for network in self.allowed_networks
            if candidate.version == network.version
        )
        return allowed or is_public(address)


def _host_port(entry: str) -> tuple[str, int]:
    if entry.startswith("["):
        host, bracket, rest = entry[1:].partition("]")
        port_text = rest.removeprefix(":")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"egress allowlist entry {entry!r}: expected [address]:port")
    else:
        host, sep, port_text = entry.rpartition(":")
        if not sep:
            host, port_text = entry, ""
    try:
        port = int(port_text) if port_text else HTTPS_PORT
        name = normal_host(host)
    except ValueError as exc:
        raise ValueError(f"egress allowlist entry {entry!r}: expected host[:port] or CIDR") from exc
    if not name or not 0 < port < 65_536 or any(ch in name for ch in "/@ "):
        raise ValueError(f"egress allowlist entry {entry!r}: expected host[:port] or CIDR")
    return name, port
