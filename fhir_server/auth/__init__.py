"""SMART App Launch authorization server: clients, users, the OAuth 2 endpoints under /auth,
and the resource-server side that turns a bearer token into a Principal."""
