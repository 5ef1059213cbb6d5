"""Which IP addresses the fetcher may connect to: public unicast only, IPv4 inside IPv6 too.

The stdlib's ``is_global`` follows the IANA special-purpose tables of its Python version,
and says nothing about the IPv4 address an IPv6 transition form carries (NAT64, 6to4,
IPv4-compatible, SIIT): ``64:ff9b::7f00:1`` reaches 127.0.0.1 through a NAT64 gateway. So an
address passes only if it is outside our own deny list, ``is_global`` agrees, and every
IPv4 address embedded in it passes the same test.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DENY_V4 = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link local, cloud metadata (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast: never a media server
        "240.0.0.0/4",  # reserved, broadcast
    )
)
_DENY_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/127",  # unspecified, loopback
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) tunnels included
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
        "fec0::/10",  # site local (deprecated, still routed by some stacks)
        "ff00::/8",  # multicast
    )
)
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_6TO4 = ipaddress.IPv6Network("2002::/16")
_COMPAT = ipaddress.IPv6Network("::/96")  # IPv4-compatible, deprecated: ::a.b.c.d
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated: ::ffff:0:a.b.c.d


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address may lead to through a transition mechanism."""
    low32 = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    found = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr in _6TO4:  # 2002:AABB:CCDD::/48 carries AA.BB.CC.DD in bits 16-48
        found.append(ipaddress.IPv4Address((int(addr) >> 80) & 0xFFFFFFFF))
    if addr in _COMPAT or addr in _SIIT or any(addr in net for net in _NAT64):
        found.append(low32)
    return found


@lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _public(addr: IPAddress) -> bool:
    deny = _DENY_V4 if addr.version == 4 else _DENY_V6
    return not any(addr in net for net in deny) and addr.is_global and not addr.is_multicast


def address_allowed(ip: str, allow_networks: tuple[str, ...] = ()) -> bool:
    """True if the fetcher may connect to ``ip`` (a resolver's answer, zone id allowed)."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # the kernel connects to the IPv4 address itself
    if any(addr.version == net.version and addr in net for net in _networks(allow_networks)):
        return True
    if not _public(addr):
        return False
    if isinstance(addr, ipaddress.IPv6Address):
        return all(_public(v4) for v4 in embedded_ipv4(addr))
    return True
