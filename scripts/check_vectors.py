#!/usr/bin/env python3
"""Checks tests/vectors/envelope-v1.json against libsodium (PyNaCl), an
implementation independent of ours: each stored value must open to its
plaintext, and the inputs must seal to the stored bytes.

    pip install pynacl && python3 scripts/check_vectors.py
"""
import base64
import json
import pathlib
import sys

from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt as open_,
    crypto_aead_xchacha20poly1305_ietf_encrypt as seal,
)

path = pathlib.Path(__file__).parent.parent / "crates/session/tests/vectors/envelope-v1.json"
vectors = json.loads(path.read_text())
for v in vectors:
    key = base64.b64decode(v["key_base64"])
    nonce = bytes.fromhex(v["nonce_hex"])
    aad = b"session/v1\0" + v["key_id"].encode() + b"\0" + v["salt"].encode() + b"\0" + v["field"].encode()
    assert aad.hex() == v["aad_hex"], v["field"]
    head = "\x01v1:" + v["key_id"] + ":"
    assert v["stored"].startswith(head), v["field"]
    body = v["stored"][len(head):]
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    assert raw[:24] == nonce, v["field"]
    assert open_(raw[24:], aad, nonce, key).decode() == v["plaintext"], v["field"]
    resealed = seal(v["plaintext"].encode(), aad, nonce, key)
    assert base64.urlsafe_b64encode(nonce + resealed).decode().rstrip("=") == body, v["field"]
print(f"{len(vectors)} vectors agree with libsodium")
sys.exit(0)
