"""The HTML pages of the authorization step: login, consent and patient picker (Chinese and
English labels). Each posts back to /auth/authorize with the request's parameters hidden."""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

#: pages of the login and consent step may not be framed (clickjacking) nor run scripts
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width"><title>{escape(title)}</title>'
        "<style>body{font-family:sans-serif;max-width:32em;margin:3em auto}"
        "label,button{display:block;margin:.6em 0}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(html, status, headers=_HEADERS)


def _hidden(params: dict[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in params.items()
    )


def login(
    params: dict[str, str], client_id: str, message: str = "", status: int = 200
) -> HTMLResponse:
    note = f'<p role="alert">{escape(message)}</p>' if message else ""
    return _page(
        "登录 / Sign in",
        f"<p>应用 / App: <b>{escape(client_id)}</b></p>{note}"
        '<form method="post" action="/auth/authorize">'
        f"{_hidden(params)}"
        '<label>用户名 / Username <input name="username" autocomplete="username" required>'
        "</label>"
        '<label>密码 / Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        '<button type="submit">登录 / Sign in</button></form>',
        status,
    )


def consent(params: dict[str, str], client_id: str, scopes: list[str]) -> HTMLResponse:
    items = "".join(f"<li><code>{escape(s)}</code></li>" for s in scopes)
    return _page(
        "授权 / Authorize",
        f"<p>应用 <b>{escape(client_id)}</b> 请求以下权限 / The app "
        f"<b>{escape(client_id)}</b> asks for:</p><ul>{items}</ul>"
        '<form method="post" action="/auth/authorize">'
        f"{_hidden(params)}"
        '<button type="submit" name="approve" value="yes">允许 / Allow</button>'
        '<button type="submit" name="approve" value="no">拒绝 / Deny</button></form>',
    )


def picker(params: dict[str, str], patients: list[tuple[str, str]]) -> HTMLResponse:
    if not patients:
        return _page(
            "选择患者 / Choose a patient", "<p>没有可选的患者 / No patients to choose from.</p>"
        )
    options = "".join(
        f'<label><input type="radio" name="patient" value="{escape(pid)}" required> '
        f"{escape(name)} ({escape(pid)})</label>"
        for pid, name in patients
    )
    return _page(
        "选择患者 / Choose a patient",
        '<form method="post" action="/auth/authorize">'
        f"{_hidden(params)}{options}"
        '<button type="submit">继续 / Continue</button></form>',
    )


def failure(message: str, status: int = 400) -> HTMLResponse:
    """An error shown to the user, never redirected (RFC 6749 §4.1.2.1: an unknown client or
    redirect URI must not be redirected to)."""
    return _page("错误 / Error", f'<p role="alert">{escape(message)}</p>', status)
