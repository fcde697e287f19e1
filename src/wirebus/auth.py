"""Authentication and per-method access rules: one stage of the request pipeline.

The :class:`Authentication` stage runs outermost for requests and streams that
arrive over a transport (the gateway): it asks its authenticators, in order, who
the caller is, refuses a call without valid credentials with UNAUTHENTICATED,
and applies the method's rule (PERMISSION_DENIED when it does not hold). The
identity is then injectable into handlers (annotate a parameter ``Identity``)
and readable anywhere in the call with :func:`current_identity`. Requests sent
in-process (``mediator.send`` from a handler or a consumer) carry no
credentials and are trusted as :data:`LOCAL` unless ``trust_local=False``.

Health checks and reflection are served beside the pipeline, and are public
by default (a load balancer or a probe checks health without a token).
``protect_health=True`` / ``protect_reflection=True`` make the gateway ask
them for credentials too, with the same authenticators, public methods and
rules (``grpc.health.v1.Health/Check``, ``grpc.reflection.v1.ServerReflection/*``).

Authenticators: :class:`StaticTokens` (a fixed set of bearer tokens) and
:class:`JWTAuthenticator` (PyJWT; keys configured, or a JWKS fetched off the
event loop and cached, see :class:`JWKS`).

Example::

    auth = Authentication(
        JWTAuthenticator(jwks_url="https://id.example.com/.well-known/jwks.json",
                         audience="shop", issuer="https://id.example.com/"),
        rules={"shop.orders.v1.OrderService/CancelOrder": {"orders:cancel"}},
    )
    app = App(name="shop", routers=[...], authentication=auth)

    @router.handler
    async def cancel_order(cmd: CancelOrder, who: Identity) -> None:
        log.info("%s cancels %s", who.subject, cmd.order_id)
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import hashlib
import json
import logging
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from .context import CallInfo, current_call
from .errors import ConfigurationError, PermissionDenied, Unauthenticated, Unavailable
from .pipeline import CALL_KINDS, CallNext

__all__ = [
    "ANONYMOUS",
    "JWKS",
    "LOCAL",
    "Authentication",
    "Authenticator",
    "Identity",
    "JWTAuthenticator",
    "StaticTokens",
    "bearer_token",
    "current_identity",
    "require_scopes",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    """Who made a call: ``subject``, how it was proven (``scheme``), scopes and claims.

    Example::

        Identity("alice", "jwt", scopes=frozenset({"orders:read"}), claims={"sub": "alice"})
    """

    subject: str
    scheme: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        """True unless this is :data:`ANONYMOUS`."""
        return self.scheme != "anonymous"


ANONYMOUS = Identity("", "anonymous")
"""A caller with no credentials (on a public method)."""

LOCAL = Identity("local", "local")
"""A request sent in-process: no transport, trusted by default."""

_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar(
    "wirebus_identity", default=LOCAL
)


def current_identity() -> Identity:
    """The identity of the call being handled (:data:`LOCAL` outside any transport call)."""
    return _identity.get()


def bearer_token(call: CallInfo) -> str | None:
    """The token of an ``authorization: Bearer <token>`` metadata entry, if there is one."""
    value = call.metadata.get("authorization")
    if value is None:
        return None
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    scheme, _, token = text.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata is not 'Bearer <token>'")
    return token.strip()


class Authenticator(Protocol):
    """Proves who a caller is from its call (metadata, peer)."""

    async def authenticate(self, call: CallInfo) -> Identity | None:
        """The caller's identity; ``None`` when the call carries no credentials of this kind;
        :class:`~wirebus.Unauthenticated` when it carries bad ones."""


class StaticTokens:
    """Bearer tokens from a fixed set, each naming an identity (or just a subject).

    Tokens are kept only as SHA-256 digests, and looked up by digest.

    Example::

        StaticTokens({"s3cr3t": Identity("billing", "bearer", scopes=frozenset({"orders:read"}))})
    """

    def __init__(self, tokens: Mapping[str, Identity | str]) -> None:
        if not tokens:
            raise ConfigurationError("StaticTokens needs at least one token")
        self._by_digest = {
            _digest(token): who if isinstance(who, Identity) else Identity(who, "bearer")
            for token, who in tokens.items()
        }

    async def authenticate(self, call: CallInfo) -> Identity | None:
        token = bearer_token(call)
        if token is None:
            return None
        identity = self._by_digest.get(_digest(token))
        if identity is None:
            raise Unauthenticated("the bearer token is not valid")
        return identity


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


Fetch = Callable[[str, float], bytes]


def _http_get(url: str, timeout: float) -> bytes:
    """GET ``url`` (blocking: run in a thread); at most 1 MiB."""
    if not url.startswith(("https://", "http://")):
        raise ConfigurationError(f"a JWKS URL must be http(s), not {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        body: bytes = reply.read(1 << 20)
    return body


class JWKS:
    """Signing keys of a JWKS URL, fetched in a thread (never on the event loop) and cached.

    Keys are fetched again when older than ``max_age``, or when a token names a
    key id not in the set -- at most once per ``min_refresh`` seconds, so tokens
    with made-up key ids cannot make every call fetch. One fetch at a time; calls
    waiting for it share its result. When a refresh fails, the keys in hand stay
    in use (logged); with none, calls get UNAVAILABLE.

    Example::

        keys = JWKS("https://id.example.com/.well-known/jwks.json")
        key = await keys.key("2024-05")
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 300.0,
        min_refresh: float = 30.0,
        timeout: float = 5.0,
        fetch: Fetch = _http_get,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.min_refresh = min_refresh
        self.timeout = timeout
        self.fetches = 0
        """How many times the set was fetched (successfully or not)."""
        self._fetch = fetch
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> Any:
        """The key ``kid`` names (the only key when ``kid`` is None and there is one)."""
        found = self._lookup(kid)
        if found is not None and not self._stale():
            return found
        if found is None and not self._may_refresh():
            raise Unauthenticated(f"the token's key id {_short(kid)} is not known")
        async with self._lock:
            if self._may_refresh() and (self._lookup(kid) is None or self._stale()):
                await self._refresh()
        found = self._lookup(kid)
        if found is None:
            raise Unauthenticated(f"the token's key id {_short(kid)} is not known")
        return found

    def _lookup(self, kid: str | None) -> Any:
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_age

    def _may_refresh(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.min_refresh

    async def _refresh(self) -> None:
        import jwt

        self.fetches += 1
        try:
            body = await asyncio.to_thread(self._fetch, self.url, self.timeout)
            keys = jwt.PyJWKSet.from_dict(json.loads(body)).keys
        except Exception as exc:  # network, JSON, key format: all the same to a caller
            self._fetched_at = time.monotonic()  # no retry storm: wait min_refresh
            if self._keys:
                log.warning(
                    "refreshing the JWKS of %s failed (%s); keeping the old keys", self.url, exc
                )
                return
            raise Unavailable(
                f"the signing keys cannot be fetched: {type(exc).__name__}",
                reason="JWKS_UNAVAILABLE",
            ) from None
        self._keys = {k.key_id or f"#{i}": k.key for i, k in enumerate(keys)}
        self._fetched_at = time.monotonic()


def _short(text: str | None) -> str:
    return "(none)" if text is None else repr(text[:64])


class JWTAuthenticator:
    """JSON Web Tokens in ``authorization: Bearer``, checked with PyJWT.

    Give ``key`` (a secret or a public key, for every token) or ``jwks_url``
    (keys by ``kid``). ``exp`` is required; ``audience`` and ``issuer`` are
    checked when given. Scopes come from the ``scope`` claim (space-separated)
    or a ``scp``/``scopes`` list.

    Example::

        JWTAuthenticator(key=public_pem, algorithms=["RS256"], audience="shop")
    """

    def __init__(
        self,
        *,
        key: Any = None,
        jwks_url: str | None = None,
        jwks: JWKS | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        audience: str | None = None,
        issuer: str | None = None,
        leeway: float = 30.0,
        subject_claim: str = "sub",
    ) -> None:
        import jwt  # noqa: F401  (PyJWT: the 'auth' extra; fail at definition, not per call)

        sources = [s for s in (key, jwks_url, jwks) if s is not None]
        if len(sources) != 1:
            raise ConfigurationError("JWTAuthenticator needs exactly one of key=, jwks_url=, jwks=")
        self.algorithms = list(algorithms)
        if not self.algorithms or "none" in (a.lower() for a in self.algorithms):
            raise ConfigurationError("JWTAuthenticator needs signing algorithms, never 'none'")
        self._key = key
        self.jwks = jwks if jwks is not None else (JWKS(jwks_url) if jwks_url else None)
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.subject_claim = subject_claim

    async def authenticate(self, call: CallInfo) -> Identity | None:
        import jwt

        token = bearer_token(call)
        if token is None:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT") from None
        key = self._key if self.jwks is None else await self.jwks.key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"the token is not valid: {_reason(exc)}") from None
        subject = claims.get(self.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated(f"the token has no {self.subject_claim!r} claim")
        return Identity(subject, "jwt", scopes=_scopes(claims), claims=claims)


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]


def _scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return frozenset(scope.split())
    for name in ("scp", "scopes"):
        value = claims.get(name)
        if isinstance(value, list):
            return frozenset(str(v) for v in value)
        if isinstance(value, str):
            return frozenset(value.split())
    return frozenset()


Rule = Callable[[Identity, str], bool | Awaitable[bool]]
"""A per-method rule: ``rule(identity, method)`` is true when the call may go on."""


def require_scopes(*scopes: str) -> Rule:
    """A rule: the identity holds every one of ``scopes``."""
    wanted = frozenset(scopes)

    def rule(identity: Identity, method: str) -> bool:
        return wanted <= identity.scopes

    rule.__qualname__ = f"require_scopes({', '.join(sorted(wanted))})"
    return rule


class Authentication:
    """The authentication stage: who is calling, and may they call this method.

    ``rules`` maps methods -- ``"pkg.Service/Method"``, ``"pkg.Service/*"`` or
    ``"*"``, the most specific wins -- to a set of required scopes or a
    :data:`Rule`. ``public`` methods accept callers without credentials (bad
    credentials are still refused). Every other method needs an identity.
    ``protect_health`` / ``protect_reflection`` extend all of this to the
    gateway's health and reflection services, public by default.

    Example::

        Authentication(StaticTokens({"s3cr3t": "ops"}), protect_reflection=True)
    """

    stage_name = "authentication"
    kinds = CALL_KINDS  # every call shape; a stream's caller once, before any message is read

    def __init__(
        self,
        *authenticators: Authenticator,
        rules: Mapping[str, Rule | Iterable[str]] | None = None,
        public: Iterable[str] = (),
        trust_local: bool = True,
        protect_health: bool = False,
        protect_reflection: bool = False,
    ) -> None:
        if not authenticators:
            raise ConfigurationError("Authentication needs at least one authenticator")
        self.authenticators = authenticators
        self.rules: dict[str, Rule] = {
            _pattern(m): (r if callable(r) else require_scopes(*r))
            for m, r in (rules or {}).items()
        }
        self.public = frozenset(_pattern(m) for m in public)
        self.trust_local = trust_local
        self.protect_health = protect_health
        """Whether the gateway's health service needs credentials (default: public)."""
        self.protect_reflection = protect_reflection
        """Whether the gateway's server reflection needs credentials (default: public)."""

    async def __call__(self, message: Any, call_next: CallNext) -> Any:
        call = current_call()
        if not call.method:  # sent in-process
            if not self.trust_local:
                raise Unauthenticated("in-process requests are not trusted here")
            return await call_next(message)
        token = _identity.set(await self.admit(call))
        try:
            return await call_next(message)
        finally:
            _identity.reset(token)

    async def admit(self, call: CallInfo) -> Identity:
        """The identity ``call`` goes on as; UNAUTHENTICATED or PERMISSION_DENIED when none."""
        method = call.method.lstrip("/")
        identity = await self.identify(call)
        if identity is None:
            if not self._matches(self.public, method):
                raise Unauthenticated(f"{method} needs credentials (authorization: Bearer ...)")
            identity = ANONYMOUS
        rule = self._rule(method)
        if rule is not None:
            allowed = rule(identity, method)
            if not isinstance(allowed, bool):
                allowed = await allowed
            if not allowed:
                raise PermissionDenied(
                    f"{identity.subject or 'an anonymous caller'} may not call {method}",
                    metadata={"method": method},
                )
        return identity

    async def identify(self, call: CallInfo) -> Identity | None:
        """The first identity an authenticator proves; ``None`` when there are no credentials."""
        for authenticator in self.authenticators:
            identity = await authenticator.authenticate(call)
            if identity is not None:
                return identity
        return None

    def _rule(self, method: str) -> Rule | None:
        service = method.partition("/")[0]
        for pattern in (method, f"{service}/*", "*"):
            if pattern in self.rules:
                return self.rules[pattern]
        return None

    @staticmethod
    def _matches(patterns: frozenset[str], method: str) -> bool:
        service = method.partition("/")[0]
        return bool({method, f"{service}/*", "*"} & patterns)


def _pattern(method: str) -> str:
    return method.lstrip("/")
