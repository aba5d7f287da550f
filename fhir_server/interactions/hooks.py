"""The feature seam of the write path: features register hooks at start-up, and the core calls
them on every create, update, patch and delete without knowing who they are."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..context import RequestContext
from ..errors import FhirError
from ..model import literal
from ..storage.contract import Session, Stored

if TYPE_CHECKING:  # typing only: Services holds the hooks
    from ..services import Services


@dataclass
class Change:
    """One write about to happen: `prev` is the stored current version (None when the resource
    is new), `resource` what will be written (None for a delete)."""

    session: Session
    services: Services
    ctx: RequestContext
    method: str
    rtype: str
    rid: str
    prev: Stored | None
    resource: dict[str, Any] | None

    @cached_property
    def before(self) -> dict[str, Any] | None:
        """The current version as JSON, None when there is none or it is deleted."""
        if self.prev is None or self.prev.deleted or self.prev.json is None:
            return None
        parsed: dict[str, Any] = literal.loads(self.prev.json)
        return parsed


@dataclass
class Effect:
    """What a hook adds to a write: a replacement for the resource (validated again before it
    is stored) and further resources to create in the same transaction (validated too)."""

    resource: dict[str, Any] | None = None
    extra: list[dict[str, Any]] = field(default_factory=list)


OnWrite = Callable[[Change], Effect | None]
#: which resources a hook is about (cheap: bulk ingest asks it of every resource)
Where = Callable[[dict[str, Any]], bool]
AfterCommit = Callable[[list[Stored]], None]
#: a check of a resource about to be written that may wait on the network; raises a
#: FhirError to refuse it
BeforeWrite = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Commit:
    """What the before-commit hooks learn of a write transaction: the caller's context (None
    for the server's own writes: bootstrap, sweep, load), the bundle type when the writes are
    a batch's or transaction's ("batch" | "transaction"), and what each feature's before-lock
    hook prepared for them, by feature name."""

    ctx: RequestContext | None
    bundle: str | None = None
    prepared: dict[str, Any] = field(default_factory=dict)


#: called inside the write transaction, after its writes; what it writes commits with them
BeforeCommit = Callable[[Session, Commit], None]
#: called before the write lock with the versions a bundle is about to write (bulk ingest),
#: so that a feature can prepare its own writes for them without holding the lock; what it
#: returns reaches its before-commit hook as Commit.prepared[name]
BeforeLock = Callable[[RequestContext, str, list[Stored]], Any]


@dataclass(frozen=True)
class Access:
    """One REST interaction as the API answered it (for the audit trail): `interaction` is a
    restful-interaction code (read, vread, search-type, history-instance, operation, ...) or
    None when the request failed before it was known; `resources` the versions read, `bundle`
    the searchset/history Bundle returned, `query` the raw request query; `failure` the error
    answered instead."""

    ctx: RequestContext
    method: str
    path: str
    interaction: str | None = None
    resources: tuple[Stored, ...] = ()
    bundle: bytes | None = None
    query: str = ""
    failure: FhirError | None = None


OnAccess = Callable[[Access], None]

#: the authorization server's security events (IHE BALP / ATNA, security.md §4.1)
SECURITY_EVENTS = frozenset(
    {
        "login",  # a user's sign-in, successful or not
        "token-issued",  # an access token from a code or client credentials
        "token-refreshed",  # an access token from a refresh token
        "token-revoked",  # RFC 7009 revocation
        "client-authentication",  # a client failed to authenticate (RFC 6749 invalid_client)
        "pkce",  # a code_verifier missing or not matching the challenge (RFC 7636)
        "jti-replay",  # a client assertion used twice (RFC 7523 §3)
        "rate-limit",  # sign-ins refused after too many failures
    }
)


@dataclass(frozen=True)
class SecurityEvent:
    """One event of the authorization server, for whichever feature records them (the audit
    trail): `kind` one of SECURITY_EVENTS; identifiers and a reason only, never a secret.
    `token_id` names an issued token as Principal.token_id does (so its uses correlate);
    `address` is the client's network address, `request_id` the request's X-Request-Id."""

    kind: str
    success: bool
    base_url: str
    client_id: str | None = None
    user: str | None = None
    reason: str | None = None
    token_id: str | None = None
    address: str | None = None
    request_id: str | None = None


OnSecurity = Callable[[SecurityEvent], None]


@dataclass
class Hooks:
    #: (resource types, which resources, hook): called inside the write transaction before the
    #: version is stored, when the old or the new version is one the hook is about; a hook may
    #: raise a FhirError to refuse the write
    on_write: list[tuple[frozenset[str], Where, OnWrite]] = field(default_factory=list)
    #: called with every version a transaction wrote, once it has committed
    after_commit: list[AfterCommit] = field(default_factory=list)
    #: called at the end of every write transaction, before it commits
    before_commit: list[BeforeCommit] = field(default_factory=list)
    #: by feature name: called before the write lock of a bulk write (see BeforeLock)
    before_lock: dict[str, BeforeLock] = field(default_factory=dict)
    #: by resource type: called outside the write lock with each resource a REST create or
    #: update, or a batch or transaction entry, is about to write; for checks that wait on the
    #: network (a Subscription endpoint's DNS), which must never hold the lock
    before_write: dict[str, list[BeforeWrite]] = field(default_factory=dict)
    #: called by the routes (and batch reads) for every REST interaction they answered; must
    #: be cheap: it runs on the read path
    on_access: list[OnAccess] = field(default_factory=list)
    #: called by the authorization server with each security event (SecurityEvent)
    on_security: list[OnSecurity] = field(default_factory=list)
    #: called once when Services close (flush what a feature buffers)
    on_close: list[Callable[[], None]] = field(default_factory=list)

    def add_on_write(self, hook: OnWrite, types: Iterable[str], where: Where) -> None:
        self.on_write.append((frozenset(types), where, hook))

    def prepare(self, ctx: RequestContext, bundle: str, written: list[Stored]) -> dict[str, Any]:
        """Run the before-lock hooks on versions about to be written (outside the lock)."""
        return {name: hook(ctx, bundle, written) for name, hook in self.before_lock.items()}

    def check(self, rtype: str, resource: dict[str, Any]) -> None:
        """Run the before-write checks of `rtype` on a resource (outside the lock)."""
        for hook in self.before_write.get(rtype, ()):
            hook(resource)

    def accessed(self, access: Access) -> None:
        for hook in self.on_access:
            hook(access)

    def security(self, event: SecurityEvent) -> None:
        assert event.kind in SECURITY_EVENTS, event.kind
        for hook in self.on_security:
            hook(event)

    def for_change(self, change: Change) -> list[OnWrite]:
        """The on-write hooks that take part in this write."""
        return [
            hook
            for types, where, hook in self.on_write
            if change.rtype in types
            and any(r is not None and where(r) for r in (change.resource, change.before))
        ]

    def any_for(self, rtype: str, resource: dict[str, Any]) -> bool:
        """Whether some hook takes part in creating this resource."""
        return any(rtype in types and where(resource) for types, where, _ in self.on_write)


@contextmanager
def transaction(
    services: Services,
    ctx: RequestContext | None = None,
    bundle: str | None = None,
    prepared: dict[str, Any] | None = None,
) -> Iterator[Session]:
    """One write transaction of the store, ended by the before-commit hooks (told the caller's
    context, the bundle type and what was prepared for it; see Commit) and followed by the
    after-commit hooks."""
    commit = Commit(ctx, bundle, prepared or {})
    with services.store.write() as session:
        yield session
        for before in services.hooks.before_commit:
            before(session, commit)
    for hook in services.hooks.after_commit:
        hook(session.written)
