"""`scram_secret` computes the keys RFC 7677's example exchange proves (PostgreSQL's own secret is compared
in test_deployment.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from ml_assets.deploy.scram import scram_secret

# RFC 7677, section 3: user "user", password "pencil".
SALT = "W22ZaJ0SNY7soEsUEjb6gQ=="
NONCE = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
AUTH_MESSAGE = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={NONCE},s={SALT},i=4096,c=biws,r={NONCE}".encode()
CLIENT_PROOF = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
SERVER_SIGNATURE = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_the_secret_checks_the_rfc_example_s_proof_and_signs_as_its_server():
    secret = scram_secret("pencil", iterations=4096, salt=base64.b64decode(SALT))
    head, keys = secret.rsplit("$", 1)
    assert head == f"SCRAM-SHA-256$4096:{SALT}"
    stored_key, server_key = (base64.b64decode(key) for key in keys.split(":"))
    # The server's checks: the proof XOR the client signature is a key whose hash is StoredKey...
    signature = hmac.digest(stored_key, AUTH_MESSAGE, "sha256")
    client_key = bytes(a ^ b for a, b in zip(base64.b64decode(CLIENT_PROOF), signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    # ...and it proves itself with ServerKey.
    assert base64.b64encode(hmac.digest(server_key, AUTH_MESSAGE, "sha256")).decode() == SERVER_SIGNATURE


def test_a_new_salt_each_time_and_no_password_postgresql_would_normalize():
    assert scram_secret("pencil") != scram_secret("pencil")
    assert scram_secret("pencil").startswith("SCRAM-SHA-256$256:")
    with pytest.raises(ValueError, match="ASCII"):
        scram_secret("pâté")
