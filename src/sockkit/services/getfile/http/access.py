"""Who may do what over HTTP: the shared token, and uploads only from this server's own pages.

Rules:
- With a token, every request carries it: ``Authorization: Bearer TOKEN`` (scripts) or HTTP basic
  with the token as the password and any user name (a browser prompts for it). Nothing else
  counts: no token in the URL, where it would land in histories and logs.
- A request that changes something (PUT, POST) is refused when a browser says it comes from
  another site: ``Sec-Fetch-Site`` other than ``same-origin``/``none``, or an ``Origin`` whose
  host differs from ``Host``. Browsers send these on every POST and PUT, and a page cannot forge
  them; clients that send neither (curl, wget) are not browsers riding on a user's credentials.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

#: The challenges sent with 401: basic first, so a browser shows its login prompt.
CHALLENGES = ('Basic realm="sockkit", charset="UTF-8"', 'Bearer realm="sockkit"')


def presented_token(authorization: str | None) -> str | None:
    """The token an Authorization header carries (Bearer, or basic's password); None if none."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        _user, colon, password = pair.partition(":")
        return password if colon else None
    return None


def from_elsewhere(headers: dict[str, str]) -> str | None:
    """Why a state-changing request looks cross-site, or None when it does not."""
    site = headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return f"the browser says this request comes from another site (Sec-Fetch-Site: {site.strip()})"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "").strip().lower()
    try:
        parts = urlsplit(origin.strip())
        origin_host = parts.netloc.lower()
    except ValueError:
        origin_host = ""
    if not origin_host or parts.scheme not in ("http", "https") or origin_host != host:
        return f"the request comes from another origin ({origin.strip()[:100]}), not from this server's page"
    return None
