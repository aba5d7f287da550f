"""The OAuth 2 endpoints under /auth (RFC 6749, 7636, 7662, 7009; SMART App Launch 2.x):
authorize (login, consent, patient picker), token (authorization_code with PKCE S256,
refresh_token with rotation, client_credentials with private_key_jwt), introspection,
revocation, EHR launch values, and the JWKS of id_token keys."""

from __future__ import annotations

import base64
import hmac
import time
import uuid
from contextvars import ContextVar
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import orjson
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ..interactions.hooks import SecurityEvent
from ..services import Services
from ..storage.contract import AuthTables
from . import admin, assertion, pages
from .cache import PrincipalCache
from .keys import Keys
from .scopes import grant
from .secrets import new_token, token_hash, verify_secret

ACCESS_SECONDS = 3600
#: SMART Backend Services: access tokens SHOULD live at most five minutes
BACKEND_SECONDS = 300
CODE_SECONDS = 120
SESSION_SECONDS = 8 * 3600
OFFLINE_SECONDS = 90 * 24 * 3600
#: failed logins per user and per client within a minute before 429
MAX_FAILURES = 5
SESSION_COOKIE = "fhir_auth_session"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_OAUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "resource",
    "code_challenge",
    "code_challenge_method",
    "launch",
    "nonce",
)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: `error` code, description, HTTP status."""

    def __init__(
        self, code: str, description: str, status: int = 400, event: str | None = None
    ) -> None:
        super().__init__(description)
        self.code, self.description, self.status = code, description, status
        #: the security event it is (hooks.SECURITY_EVENTS), when not the usual one
        self.event = event


class Auth:
    """The authorization server's state: its tables, its key, and the FHIR services (to
    resolve users' organizations and the patients a picker may show)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        #: Principals of tokens checked a moment ago (bearer.py); forgotten on revocation
        self.principals = PrincipalCache(services.settings.token_cache_seconds)

    @cached_property
    def store(self) -> AuthTables:
        """The database's authorization tables (storage/contract.py AuthTables)."""
        return self.services.store.auth

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.store)


#: the client's network address and the X-Request-Id of the /auth request being served (set
#: by routes.py for each one; a ContextVar follows the request into the thread pool, and
#: concurrent requests each see their own), for the security events it raises
caller: ContextVar[tuple[str | None, str | None]] = ContextVar("caller", default=(None, None))


def alert(
    auth: Auth, base: str, kind: str, success: bool, client_id: str | None = None,
    user: str | None = None, reason: str | None = None, token_id: str | None = None,
) -> None:
    """Tell the features that record security events (the audit trail) of one, with the
    address and request id of the /auth request it happened in (`caller`)."""
    address, request_id = caller.get()
    event = SecurityEvent(kind, success, base, client_id, user, reason, token_id, address,
                          request_id)  # fmt: skip
    auth.services.hooks.security(event)


def urls(base: str) -> dict[str, str]:
    """Absolute endpoint URLs for a FHIR base (`…/fhir` → `…/auth/…`)."""
    root = base[: -len("/fhir")] if base.endswith("/fhir") else base
    names = ("authorize", "token", "introspect", "revoke", "jwks", "launch")
    return {name: f"{root}/auth/{name}" for name in names}


async def read_params(request: Request) -> dict[str, str]:
    """The query (GET) or the form body (POST), each parameter at most once (RFC 6749 §3.1)."""
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise OAuthError("invalid_request", "send parameters as a form (urlencoded body)")
        raw = (await request.body()).decode("utf-8", "replace")
    else:
        raw = request.url.query
    pairs = parse_qsl(raw, keep_blank_values=True)
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params:
            raise OAuthError("invalid_request", f"parameter given more than once: {key}")
        params[key] = value
    return params


def oauth_error(exc: OAuthError) -> JSONResponse:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="fhir-server"'
    body = {"error": exc.code, "error_description": exc.description}
    return JSONResponse(body, exc.status, headers=headers)


# --- authorize ---------------------------------------------------------------------------


def authorize(auth: Auth, params: dict[str, str], base: str, session: str | None) -> Response:
    """One step of the authorization request: check the client and redirect URI (a failure
    here is a page, never a redirect), then the request (a failure redirects with `error`),
    then sign-in, patient choice and consent, then the code."""
    client = auth.store.client(params.get("client_id", ""))
    if client is None:
        return pages.failure("未知的应用 / Unknown client_id")
    redirect_uri = params.get("redirect_uri") or ""
    if not redirect_uri and len(client["redirect_uris"]) == 1:
        redirect_uri = client["redirect_uris"][0]
    if redirect_uri not in client["redirect_uris"]:  # exact match: no open redirect
        return pages.failure("重定向地址未登记 / redirect_uri is not registered for this client")
    state = params.get("state")
    try:
        return _authorize(auth, client, redirect_uri, params, base, session)
    except OAuthError as exc:
        return _redirect(
            redirect_uri, {"error": exc.code, "error_description": exc.description, "state": state}
        )


def _authorize(
    auth: Auth,
    client: dict[str, Any],
    redirect_uri: str,
    params: dict[str, str],
    base: str,
    session: str | None,
) -> Response:
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    aud = params.get("aud") or params.get("resource")
    if aud is None or aud.rstrip("/") != base.rstrip("/"):
        raise OAuthError("invalid_request", f"aud must be this FHIR server's base URL {base}")
    _check_challenge(params)
    scopes = grant(params.get("scope", ""), client["scope"])
    if not scopes:
        raise OAuthError("invalid_scope", "none of the requested scopes is allowed this client")
    carried = {k: params[k] for k in _OAUTH_PARAMS if k in params}
    user, cookie = _signed_in(auth, client, params, session, base)
    if user is None:
        return cookie  # the login page (again), or 429
    launch = _launch(auth, client, params, user["username"])
    patient = launch.get("patient")
    banner = patient is None
    if user["fhir_user"].startswith("Patient/"):
        patient = patient or user["fhir_user"]
    elif patient is None and "launch/patient" in scopes:
        choices = patients_for(auth, user)
        if params.get("patient") not in {pid for pid, _ in choices} or not _csrf_ok(
            params, session
        ):
            return _with_cookie(
                pages.picker({**carried, "csrf": _csrf(cookie, session)}, choices), cookie
            )
        patient = params["patient"]
    if not client["trusted"]:
        approved = params.get("approve")
        if approved == "no" and _csrf_ok(params, session):
            raise OAuthError("access_denied", "the user declined")
        if approved != "yes" or not _csrf_ok(params, session):
            keep = {**carried, **({"patient": patient} if patient else {})}
            page = pages.consent(
                {**keep, "csrf": _csrf(cookie, session)}, client["client_id"], scopes
            )
            return _with_cookie(page, cookie)
    if "launch" in params:  # used up only now that the code is issued
        auth.store.take_grant("auth_launch", token_hash(params["launch"]), time.time())
    code = new_token()
    data = {
        "username": user["username"],
        "scope": " ".join(scopes),
        "redirect_uri": redirect_uri,
        "code_challenge": params["code_challenge"],
        "aud": base,
        "nonce": params.get("nonce"),
        "patient": patient.split("/")[-1] if patient else None,
        "encounter": launch["encounter"].split("/")[-1] if launch.get("encounter") else None,
        "need_patient_banner": banner,
        "session": token_hash(cookie if isinstance(cookie, str) else session or ""),
    }
    auth.store.put_grant(
        "auth_code", token_hash(code), client["client_id"], data, time.time() + CODE_SECONDS
    )
    response = _redirect(redirect_uri, {"code": code, "state": params.get("state")})
    return _with_cookie(response, cookie)


def _check_challenge(params: dict[str, str]) -> None:
    """SMART: S256 SHALL be supported and `plain` SHALL NOT; we require PKCE of every client
    (stock authlib lets a confidential client through without it, and takes `plain`)."""
    challenge, method = params.get("code_challenge"), params.get("code_challenge_method")
    if not challenge:
        raise OAuthError("invalid_request", "code_challenge is required (PKCE, S256)")
    if method != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256")
    if not (43 <= len(challenge) <= 128) or not all(c.isalnum() or c in "-._~" for c in challenge):
        raise OAuthError("invalid_request", "malformed code_challenge")


def _signed_in(
    auth: Auth, client: dict[str, Any], params: dict[str, str], session: str | None, base: str
) -> tuple[dict[str, Any] | None, Any]:
    """(user, new session value or None) when signed in; else (None, the page to show)."""
    carried = {k: params[k] for k in _OAUTH_PARAMS if k in params}
    if session:
        found = auth.store.token(token_hash(session))
        if found and found[1] == "session" and not found[4] and found[3] > time.time():
            user = auth.store.user(found[2]["username"])
            if user is not None:
                return user, None
    username, password = params.get("username"), params.get("password")
    if username is None or password is None:
        return None, pages.login(carried, client["client_id"])
    now = time.time()
    who = [f"user:{username}", f"client:{client['client_id']}"]
    if auth.store.failures(who, now - 60) >= MAX_FAILURES:
        page = pages.login(
            carried,
            client["client_id"],
            "尝试次数过多，请稍后再试 / Too many failed sign-ins; wait a minute",
            429,
        )
        page.headers["Retry-After"] = "60"
        alert(auth, base, "rate-limit", False, client["client_id"], username,
              f"more than {MAX_FAILURES} failed sign-ins within a minute")  # fmt: skip
        return None, page
    user = auth.store.user(username)
    if user is None or not verify_secret(password, user["password_hash"]):
        auth.store.fail(who, now, now - 3600)
        alert(auth, base, "login", False, client["client_id"], username,
              "unknown user" if user is None else "wrong password")  # fmt: skip
        return None, pages.login(
            carried, client["client_id"], "用户名或密码错误 / Wrong username or password", 401
        )
    value = new_token()
    auth.store.put_token(
        token_hash(value), "", "session", {"username": username}, now + SESSION_SECONDS
    )
    alert(auth, base, "login", True, client["client_id"], username)
    return user, value


def _launch(auth: Auth, client: dict[str, Any], params: dict[str, str], username: str) -> dict:
    """The EHR launch context bound to the `launch` value: single use, this client, this user."""
    value = params.get("launch")
    if value is None:
        return {}
    found = auth.store.take_grant("auth_launch", token_hash(value), time.time(), consume=False)
    if found is None or found["client_id"] != client["client_id"]:
        raise OAuthError("invalid_request", "unknown, used or expired launch value")
    if found["username"] != username:
        raise OAuthError("invalid_request", "the launch belongs to another user")
    return found


def patients_for(auth: Auth, user: dict[str, Any]) -> list[tuple[str, str]]:
    """Patients a practitioner may pick: those whose managingOrganization is the user's
    organization (the consortium referral rule comes with the policy module)."""
    org = organization_of(auth.services, user["fhir_user"])
    if org is None:
        return []
    return auth.store.patients_of(org.split("/", 1)[1])


def organization_of(services: Services, fhir_user: str) -> str | None:
    """`Organization/id` of a PractitionerRole user, read from the current PractitionerRole."""
    kind, _, rid = fhir_user.partition("/")
    if kind != "PractitionerRole":
        return None
    found = services.store.reader().current(kind, rid)
    if found is None or found[1].deleted or found[1].json is None:
        return None
    ref = orjson.loads(found[1].json).get("organization", {}).get("reference", "")
    return ref if isinstance(ref, str) and ref.startswith("Organization/") else None


def _csrf(new_session: Any, session: str | None) -> str:
    value = new_session if isinstance(new_session, str) else session
    return token_hash("csrf:" + (value or ""))


def _csrf_ok(params: dict[str, str], session: str | None) -> bool:
    """A consent or picker answer counts only from our own form (the session's CSRF value)."""
    return bool(session) and hmac.compare_digest(params.get("csrf", ""), _csrf(None, session))


def _with_cookie(response: Response, session: Any) -> Response:
    if isinstance(session, str):
        response.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="lax",
            path="/auth",
        )
    return response


def _redirect(uri: str, params: dict[str, str | None]) -> RedirectResponse:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return RedirectResponse(f"{uri}{'&' if '?' in uri else '?'}{query}", 302, headers=_NO_STORE)


# --- token ---------------------------------------------------------------------------------


def token(auth: Auth, params: dict[str, str], headers: Headers, base: str) -> dict[str, Any]:
    kind = params.get("grant_type")
    client = authenticate_client(auth, params, headers, base)
    if kind == "authorization_code":
        return _code_grant(auth, client, params, base)
    if kind == "refresh_token":
        return _refresh_grant(auth, client, params, base)
    if kind == "client_credentials":
        return _client_credentials(auth, client, params, base)
    raise OAuthError(
        "unsupported_grant_type",
        "grant_type: authorization_code, refresh_token or client_credentials",
    )


def authenticate_client(
    auth: Auth, params: dict[str, str], headers: Headers, base: str
) -> dict[str, Any] | None:
    """RFC 6749 §2.3: HTTP Basic, client_secret_post, private_key_jwt (RFC 7523), or a
    public client naming itself; None when the request names no client at all. A failure is
    a security event (a replayed assertion its own kind)."""
    try:
        return _authenticate_client(auth, params, headers, urls(base)["token"])
    except OAuthError as exc:
        alert(auth, base, exc.event or "client-authentication", False,
              _claimed_client(params, headers), reason=exc.description)  # fmt: skip
        raise


def _claimed_client(params: dict[str, str], headers: Headers) -> str | None:
    """The client_id a failed request claimed (unverified: for the audit record only)."""
    header = headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode()
            return unquote(raw.split(":", 1)[0])
        except ValueError:
            return None
    if "client_assertion" in params and "client_id" not in params:
        return assertion.claimed_issuer(params["client_assertion"])
    return params.get("client_id")


def _authenticate_client(
    auth: Auth, params: dict[str, str], headers: Headers, token_url: str
) -> dict[str, Any] | None:
    header = headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            raw = base64.b64decode(header[6:].strip(), validate=True).decode()
            client_id, secret = (unquote(p) for p in raw.split(":", 1))
        except ValueError:
            raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
        return _secret_client(auth, client_id, secret)
    if "client_assertion" in params:
        if params.get("client_assertion_type") != assertion.ASSERTION_TYPE:
            raise OAuthError(
                "invalid_client", f"client_assertion_type must be {assertion.ASSERTION_TYPE}", 401
            )
        try:
            client = assertion.verify(auth.store, params["client_assertion"], token_url)
        except assertion.Replayed as exc:
            raise OAuthError("invalid_client", str(exc), 401, "jti-replay") from None
        except assertion.AssertionError_ as exc:
            raise OAuthError("invalid_client", str(exc), 401) from None
        if params.get("client_id", client["client_id"]) != client["client_id"]:
            raise OAuthError("invalid_client", "client_id differs from the assertion's iss", 401)
        return client
    if "client_secret" in params:
        return _secret_client(auth, params.get("client_id", ""), params["client_secret"])
    if "client_id" in params:
        public = auth.store.client(params["client_id"])
        if public is None or public["token_endpoint_auth_method"] != "none":
            raise OAuthError("invalid_client", "client authentication required", 401)
        return public
    return None


def _secret_client(auth: Auth, client_id: str, secret: str) -> dict[str, Any]:
    client = auth.store.client(client_id)
    if client is None or not verify_secret(secret, client.get("secret_hash", "")):
        raise OAuthError("invalid_client", "unknown client or wrong secret", 401)
    return client


def _code_grant(
    auth: Auth, client: dict[str, Any] | None, params: dict[str, str], base: str
) -> dict[str, Any]:
    if client is None:
        raise OAuthError("invalid_client", "client authentication required", 401)
    code = auth.store.take_grant("auth_code", token_hash(params.get("code", "")), time.time())
    if code is None or code["client_id"] != client["client_id"]:
        raise OAuthError("invalid_grant", "unknown, expired or used code")
    if params.get("redirect_uri") != code["redirect_uri"]:
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorization request")
    verifier = params.get("code_verifier", "")
    if not (43 <= len(verifier) <= 128) or not hmac.compare_digest(
        create_s256_code_challenge(verifier), code["code_challenge"]
    ):
        alert(auth, base, "pkce", False, client["client_id"], code["username"],
              "code_verifier missing or does not match the code_challenge")  # fmt: skip
        raise OAuthError("invalid_grant", "code_verifier missing or does not match (PKCE)")
    user = auth.store.user(code["username"])
    if user is None:
        raise OAuthError("invalid_grant", "the user no longer exists")
    data = {
        k: code[k]
        for k in ("scope", "patient", "encounter", "need_patient_banner", "session", "aud")
    }
    data.update(
        username=user["username"],
        fhir_user=user["fhir_user"],
        roles=user["roles"],
        grant=uuid.uuid4().hex,
    )
    body = issue(auth, client["client_id"], data, ACCESS_SECONDS)
    scopes = data["scope"].split()
    if "openid" in scopes and ("fhirUser" in scopes or "profile" in scopes):
        claims = {"sub": user["username"], "fhirUser": f"{base}/{user['fhir_user']}"}
        if code.get("nonce"):
            claims["nonce"] = code["nonce"]
        body["id_token"] = auth.keys.id_token(base, client["client_id"], claims)
    return body


def _refresh_grant(
    auth: Auth, client: dict[str, Any] | None, params: dict[str, str], base: str
) -> dict[str, Any]:
    """RFC 6749 §6 with rotation: the old refresh token is used up. A public client need not
    send client_id (client-js does not); the token names its client."""
    found = auth.store.token(token_hash(params.get("refresh_token", "")))
    if found is None:
        raise OAuthError("invalid_grant", "unknown refresh token")
    owner = auth.store.client(found[0])
    if owner is None:
        raise OAuthError("invalid_grant", "the client was removed")
    if client is None and owner["token_endpoint_auth_method"] != "none":
        raise OAuthError("invalid_client", "client authentication required", 401)
    if client is not None and client["client_id"] != owner["client_id"]:
        raise OAuthError("invalid_grant", "the refresh token belongs to another client")
    used = auth.store.rotate_refresh(token_hash(params.get("refresh_token", "")), time.time())
    if used is None:
        raise OAuthError("invalid_grant", "refresh token expired, revoked or already used")
    data = used[1]
    scopes = data["scope"].split()
    if "offline_access" not in scopes and not _session_live(auth, data.get("session")):
        raise OAuthError("invalid_grant", "online_access ended with the user's session")
    if "scope" in params:  # same or fewer scopes (RFC 6749 §6)
        narrower = params["scope"].split()
        if not set(narrower) <= set(scopes):
            raise OAuthError("invalid_scope", "a refresh may not widen the scope")
        data = {**data, "scope": " ".join(s for s in scopes if s in narrower)}
    return issue(auth, owner["client_id"], data, ACCESS_SECONDS, event="token-refreshed")


def _session_live(auth: Auth, session: str | None) -> bool:
    found = auth.store.token(session) if session else None
    return bool(found and not found[4] and found[3] > time.time())


def _client_credentials(
    auth: Auth, client: dict[str, Any] | None, params: dict[str, str], base: str
) -> dict[str, Any]:
    """SMART Backend Services: private_key_jwt only, scopes within the pre-authorised ones,
    five-minute tokens, no refresh token."""
    if client is None or client["token_endpoint_auth_method"] != "private_key_jwt":
        raise OAuthError("invalid_client", "client_credentials needs private_key_jwt", 401)
    scopes = [s for s in grant(params.get("scope", ""), client["scope"]) if s.startswith("system/")]
    if not scopes:
        raise OAuthError("invalid_scope", "no requested system/ scope is allowed this client")
    data = {"scope": " ".join(scopes), "aud": base, "grant": uuid.uuid4().hex, "system": True}
    return issue(auth, client["client_id"], data, BACKEND_SECONDS, refresh=False)


def issue(
    auth: Auth, client_id: str, data: dict[str, Any], seconds: int, refresh: bool = True,
    event: str = "token-issued",
) -> dict[str, Any]:
    """An opaque access token (stored as its hash) and, with offline_access/online_access,
    a refresh token; the launch context goes into the response (SMART token response).
    A security `event`, naming the token as the Principal its uses carry does."""
    now = time.time()
    access = new_token()
    data = {**data, "iat": int(now)}
    auth.store.put_token(token_hash(access), client_id, "access", data, now + seconds)
    alert(auth, data["aud"], event, True, client_id, data.get("username"),
          f"scope: {data['scope']}", token_hash(access)[:16])  # fmt: skip
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": seconds,
        "scope": data["scope"],
    }
    scopes = data["scope"].split()
    if refresh and ("offline_access" in scopes or "online_access" in scopes):
        value = new_token()
        lifetime = OFFLINE_SECONDS if "offline_access" in scopes else SESSION_SECONDS
        auth.store.put_token(token_hash(value), client_id, "refresh", data, now + lifetime)
        body["refresh_token"] = value
    if data.get("patient"):
        body["patient"] = data["patient"]
        body["need_patient_banner"] = bool(data.get("need_patient_banner"))
    if data.get("encounter"):
        body["encounter"] = data["encounter"]
    return body


# --- introspection, revocation, launch --------------------------------------------------


def introspect(auth: Auth, params: dict[str, str], headers: Headers, base: str) -> dict[str, Any]:
    """RFC 7662 with SMART's fields. The caller is a client (its usual authentication) or
    holds a live bearer token (SMART: an appropriately scoped token SHALL do)."""
    header = headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        if active_token(auth, header[7:].strip(), base) is None:
            raise OAuthError("invalid_token", "the bearer token is not active", 401)
    elif authenticate_client(auth, params, headers, base) is None:
        raise OAuthError("invalid_client", "authenticate as a client or with a bearer token", 401)
    found = active_token(auth, params.get("token", ""), base)
    if found is None:
        return {"active": False}
    client_id, data, expires_at = found
    out: dict[str, Any] = {
        "active": True,
        "scope": data["scope"],
        "client_id": client_id,
        "token_type": "Bearer",
        "exp": int(expires_at),
        "iat": data.get("iat"),
        "aud": data.get("aud"),
        "iss": base,
    }
    if data.get("username"):
        out.update(sub=data["username"], username=data["username"])
        out["fhirUser"] = f"{base}/{data['fhir_user']}"
    for key in ("patient", "encounter"):
        if data.get(key):
            out[key] = data[key]
    return out


def active_token(auth: Auth, value: str, base: str) -> tuple[str, dict[str, Any], float] | None:
    """(client_id, data, expires_at) of a live access token issued for this FHIR base."""
    found = auth.store.token(token_hash(value)) if value else None
    if found is None:
        return None
    client_id, kind, data, expires_at, revoked = found
    if kind != "access" or revoked or expires_at <= time.time() or data.get("aud") != base:
        return None
    return client_id, data, expires_at


def revoke(auth: Auth, params: dict[str, str], headers: Headers, base: str) -> None:
    """RFC 7009: the client revokes its own token; unknown tokens are not an error."""
    client = authenticate_client(auth, params, headers, base)
    if client is None:
        raise OAuthError("invalid_client", "client authentication required", 401)
    if "token" not in params:
        raise OAuthError("invalid_request", "token is required")
    found = auth.store.revoke_token(token_hash(params["token"]), client["client_id"])
    if found:  # at once in this process; other workers within token_cache_seconds
        auth.principals.clear()
    alert(auth, base, "token-revoked", True, client["client_id"],
          reason=None if found else "no such token of this client")  # fmt: skip


def launch(auth: Auth, header: str, body: Any, base: str) -> dict[str, str]:
    """POST /auth/launch: an EMR (a backend-services client with a system/ scope) asks for a
    one-time launch value for an app, a user and their context."""
    found = (
        active_token(auth, header[7:].strip(), base) if header[:7].lower() == "bearer " else None
    )
    if found is None or not found[1].get("system"):
        raise OAuthError("invalid_token", "a system-scoped bearer token is required", 401)
    if not isinstance(body, dict) or not all(
        isinstance(body.get(k), str) for k in ("client_id", "user")
    ):
        raise OAuthError("invalid_request", "JSON with client_id, user (patient, encounter)")
    try:
        value = admin.create_launch(
            auth.store, body["client_id"], body["user"], body.get("patient"), body.get("encounter")
        )
    except admin.AdminError as exc:
        raise OAuthError("invalid_request", str(exc)) from None
    return {"launch": value}


async def run(work: Any, *args: Any) -> Any:
    """Database work and scrypt off the event loop."""
    return await run_in_threadpool(work, *args)
