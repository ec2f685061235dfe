"""A PostgreSQL SCRAM-SHA-256 secret (what `pg_authid.rolpassword` holds), computed here to choose its
iterations (PostgreSQL 15 always takes 4096; 16 has `scram_iterations`): the local stack's and the
compose stack's (pgbouncer_auth.py).

Each login makes the client run the iterations, and dagster-postgres logs in for every query: at
4096 a login cost 3.4 ms of CPU and an idle daemon 3 CPU-seconds a minute. The iterations slow down
guessing a weak password from a leaked secret; the stack's password is 128 random bits, which no
guessing reaches, so it takes `ITERATIONS` (docs/deployment.md#postgresql-logins).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

ITERATIONS = 256
# Where PostgreSQL keeps a role's secret (readable by superusers); `role` is a quoted name or current_user.
ROLE_SECRET = "SELECT rolpassword FROM pg_authid WHERE rolname = {role}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_secret(password: str, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (RFC 5802, 7677), as PostgreSQL
    stores a password; `ALTER ROLE ... PASSWORD` and initdb's `--pwfile` take it as it is."""
    if not (password.isascii() and password.isprintable()):
        # PostgreSQL normalizes other passwords (SASLprep) before hashing; this does not.
        raise ValueError("only printable ASCII passwords are hashed here")
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def hashes(secret: str, password: str, iterations: int = ITERATIONS) -> bool:
    """Whether `secret` is `password`'s at `iterations`, whatever its salt."""
    try:
        scheme, head, _keys = secret.split("$")
        count, salt = head.split(":")
        return (
            scheme == "SCRAM-SHA-256"
            and int(count) == iterations
            and scram_secret(password, iterations, base64.b64decode(salt, validate=True)) == secret
        )
    except (ValueError, binascii.Error):
        return False
