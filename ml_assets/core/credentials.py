"""Credentials in URIs (`scheme://USER:PASSWORD@host/...`): handed to the client that needs them, never
recorded or printed.

Links drop the user info, messages show the password as `***`, and a client is given the user and
password apart from the URI (MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD), so that nothing it logs
or raises carries them.
"""

from __future__ import annotations

import re
import urllib.parse

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*)(?::(?P<password>[^@/\s]*))?@")
MASK = "***"


def mask(text: str) -> str:
    """`text` with the password of every URI in it shown as `***` (the user stays: it says who logs in)."""
    return _USERINFO.sub(
        lambda m: m["scheme"] + m["user"] + (f":{MASK}" if m["password"] is not None else "") + "@", text
    )


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI without user info, its user, its password), both percent-decoded; None where absent."""
    found = _USERINFO.match(uri)
    if found is None:
        return uri, None, None
    password = found["password"]
    plain = found["scheme"] + uri[found.end() :]
    return plain, urllib.parse.unquote(found["user"]), None if password is None else urllib.parse.unquote(password)


def without_userinfo(url: str) -> str:
    """`url` without its user and password: what a link may show."""
    return split_userinfo(url)[0]
