"""Discovery: `[base]/.well-known/smart-configuration` (SMART 2.x) and the `oauth-uris`
extension of CapabilityStatement.rest.security (SMART 1.0; Python fhirclient reads only it)."""

from __future__ import annotations

from typing import Any

from .assertion import ALGORITHMS
from .scopes import DEFAULT_APP_SCOPES
from .server import urls as _urls

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "sso-openid-connect",
    "context-banner",
    "context-ehr-patient",
    "context-ehr-encounter",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
]


def smart_configuration(base: str) -> dict[str, Any]:
    u = _urls(base)
    return {
        "issuer": base,
        "jwks_uri": u["jwks"],
        "authorization_endpoint": u["authorize"],
        "token_endpoint": u["token"],
        "introspection_endpoint": u["introspect"],
        "revocation_endpoint": u["revoke"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": [*DEFAULT_APP_SCOPES.split(), "system/*.rs"],
        "capabilities": CAPABILITIES,
    }


def security(base: str) -> dict[str, Any]:
    """CapabilityStatement.rest.security with the SMART service code and oauth-uris."""
    u = _urls(base)
    return {
        "cors": True,
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "extension": [
            {
                "url": OAUTH_URIS,
                "extension": [
                    {"url": name, "valueUri": u[key]}
                    for name, key in (
                        ("authorize", "authorize"),
                        ("token", "token"),
                        ("introspect", "introspect"),
                        ("revoke", "revoke"),
                    )
                ],
            }
        ],
    }
