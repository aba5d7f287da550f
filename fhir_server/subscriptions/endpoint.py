"""Where a rest-hook may point (OWASP API7, server-side request forgery; security.md §5.1):
http(s) only, and never at the server's own network. The hostname is resolved and every address
checked, at creation (before the write lock: a slow resolver must not hold it) and again before
each delivery (a name may be re-pointed: DNS rebinding).
Loopback and private addresses pass only with `subscription_allow_private` (tests, single-host
deployments); link-local addresses, cloud metadata among them (169.254.169.254, fd00:ec2::254),
never do."""

from __future__ import annotations

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as Timeout
from urllib.parse import urlsplit

from ..errors import FhirError, error

EXPRESSION = "Subscription.channel.endpoint"
#: seconds a name may take to resolve before the endpoint counts as unreachable
RESOLVE_SECONDS = 3.0
_resolver = ThreadPoolExecutor(max_workers=2, thread_name_prefix="subscription-dns")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def check_endpoint(
    url: str, allow_private: bool, must_resolve: bool = True, resolve: bool = True
) -> list[str]:
    """The addresses `url`'s host resolves to, all allowed; else a 400 FhirError saying why.
    A name that does not resolve is refused only when `must_resolve` (at delivery); a
    Subscription naming one is accepted, and its deliveries fail until it resolves. Without
    `resolve` (inside the write lock) only an address written as such is checked."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(400, "invalid", f"A rest-hook endpoint must be an http(s) URL: '{url}'",
                    EXPRESSION)  # fmt: skip
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise error(400, "invalid", f"Invalid port in '{url}'", EXPRESSION) from None
    try:
        addresses = _resolve(parts.hostname, port) if resolve else _literal(parts.hostname)
    except FhirError:
        if must_resolve:
            raise
        return []
    for address in addresses:
        reason = refused(ipaddress.ip_address(address), allow_private)
        if reason:
            raise error(400, "security",
                        f"Endpoint host {parts.hostname} resolves to {address}, {reason}",
                        EXPRESSION)  # fmt: skip
    return addresses


def refused(address: Address, allow_private: bool) -> str | None:
    """Why an address may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_link_local or str(address) in _METADATA:
        return "a link-local or cloud metadata address (always refused)"
    if address.is_multicast or address.is_unspecified or address.is_reserved:
        return "not a unicast address"
    if address.is_loopback or address.is_private or _shared(address):
        if allow_private:
            return None
        return ("a loopback or private address (refused unless "
                "FHIR_SERVER_SUBSCRIPTION_ALLOW_PRIVATE=true)")  # fmt: skip
    return None


#: metadata services outside the link-local ranges (AWS's IPv6 IMDS; Alibaba Cloud's)
_METADATA = frozenset({"fd00:ec2::254", "100.100.100.200"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def _shared(address: Address) -> bool:
    """RFC 6598 shared address space (carrier-grade NAT): private in practice."""
    return isinstance(address, ipaddress.IPv4Address) and address in _CGNAT


def _literal(host: str) -> list[str]:
    """The address a host written as one is (no lookup), else none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        return []


def _resolve(host: str, port: int) -> list[str]:
    literal = _literal(host)
    if literal:
        return literal
    future = _resolver.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=RESOLVE_SECONDS)
    except Timeout:
        raise _unresolved(host, "timed out") from None
    except OSError as exc:
        raise _unresolved(host, str(exc)) from None
    return sorted({str(info[4][0]).split("%")[0] for info in infos})


def _unresolved(host: str, why: str) -> FhirError:
    return error(400, "invalid", f"Endpoint host {host} does not resolve: {why}", EXPRESSION)
