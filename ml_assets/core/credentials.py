"""Credentials in URIs (`scheme://USER:PASSWORD@host/...`): handed to the client that needs them, never
recorded or printed.

Links drop the user info, messages show the password as `***`, and a client is given the user and
password apart from the URI (MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD), so that nothing it logs
or raises carries them.
"""

from __future__ import annotations

import re
import urllib.parse

# The user info ends at the authority's last `@`, as requests and urllib read it: a user or password may hold one
# (`alice@example.com`, `p@ss`).
_USERINFO = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/\s]*?)(?::(?P<password>[^/\s]*))?@(?![^/\s]*@)"
)
# The stores whose client logs in with a URL's user and password (s3fs: key and secret). An S3 secret key often
# holds `/`, which users do not percent-encode; no bucket name holds `:`, so `s3://KEY:` starts a key and
# secret, whatever comes before the `@`.
S3_SCHEMES = ("s3", "s3a")
_S3_USERINFO = re.compile(rf"(?P<scheme>\b(?:{'|'.join(S3_SCHEMES)})://)(?P<user>[^:@/\s]*):(?P<password>[^@\s]*)@")
MASK = "***"


def mask(text: str) -> str:
    """`text` with the password of every URI in it shown as `***` (the user stays: it says who logs in)."""
    for userinfo in (_S3_USERINFO, _USERINFO):
        text = userinfo.sub(
            lambda m: m["scheme"] + m["user"] + (f":{MASK}" if m["password"] is not None else "") + "@", text
        )
    return text


def said(error: BaseException, limit: int = 300) -> str:
    """The first line of `error`'s message, passwords masked before it is cut (a cut could part one from its
    `@`), at most `limit` characters; its class where it has no message."""
    lines = mask(str(error)).strip().splitlines()
    return (lines or [type(error).__name__])[0][:limit]


def split_userinfo(uri: str) -> tuple[str, str | None, str | None]:
    """(the URI without user info, its user, its password), both percent-decoded; None where absent."""
    found = _S3_USERINFO.match(uri) or _USERINFO.match(uri)
    if found is None:
        return uri, None, None
    password = found["password"]
    plain = found["scheme"] + uri[found.end() :]
    return plain, urllib.parse.unquote(found["user"]), None if password is None else urllib.parse.unquote(password)


def without_userinfo(url: str) -> str:
    """`url` without its user and password: what a link may show."""
    return split_userinfo(url)[0]
