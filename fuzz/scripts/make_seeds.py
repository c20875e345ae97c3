#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/: a few well-formed inputs per
target (and a few near misses) for libFuzzer to mutate. Signed seeds use the
keys of scalar 0x33… (a home server) and 0x44… (a user), as the targets do,
so they start from statements that verify. Run from the repository root:
python3 fuzz/scripts/make_seeds.py (needs Python's `cryptography`)."""

import base64
import hashlib
import json
import os
import struct

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ROOT = os.path.join(os.path.dirname(__file__), "..")
ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def key(byte):
    return ec.derive_private_key(int.from_bytes(bytes([byte]) * 32, "big"), ec.SECP256R1())


def spki(k):
    return k.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(k, msg):
    r, s = decode_dss_signature(k.sign(msg, ec.ECDSA(hashes.SHA256())))
    s = min(s, ORDER - s)  # low S, as Carrier signs
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def b64(b):
    return base64.b64encode(b).decode()


def short(b):
    return bytes([len(b)]) + b


def medium(b):
    return struct.pack(">H", len(b)) + b


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def vectors():
    with open(os.path.join(ROOT, "..", "tests", "vectors", "envelope_p256.json")) as f:
        p256 = bytes.fromhex(json.load(f)["outputs"]["envelope"])
    with open(os.path.join(ROOT, "..", "tests", "vectors", "envelope_rsa.json")) as f:
        rsa = bytes.fromhex(json.load(f)["envelope"])
    return p256, rsa


def main():
    p256_env, rsa_env = vectors()
    home, user = key(0x33), key(0x44)
    alice, bob = "+12025550101", "+12025550102"
    mid = "00112233445566778899aabbccddeeff"

    # frame: a 2-byte limit, then a stream of frames.
    def frames(limit, *bodies):
        return struct.pack(">H", limit) + b"".join(struct.pack(">I", len(b)) + b for b in bodies)

    write("frame", "two", frames(4096, b'{"type":"ping"}', b"x" * 100))
    write("frame", "over_limit", frames(16, b"y" * 17))
    write("frame", "truncated", frames(4096, b"z" * 10)[:-3])
    write("frame", "empty_frame", frames(64, b""))
    write("frame", "huge_length", struct.pack(">HI", 65535, 0xFFFFFFFF))

    requests = {
        "challenge": {"seq": 1, "type": "challenge"},
        "register": {"seq": 2, "type": "register", "phone": alice, "key_type": "p256",
                     "public_key": b64(spki(user))},
        "verify": {"seq": 3, "type": "verify", "phone": alice, "code": "123456",
                   "signature": b64(b"\x01" * 64)},
        "login": {"seq": 4, "type": "login", "phone": alice, "signature": b64(b"\x02" * 64)},
        "lookup": {"seq": 5, "type": "lookup", "phone": "+1 202 555 0102"},
        "send": {"seq": 6, "type": "send", "id": mid, "to": bob, "envelope": b64(p256_env)},
        "fetch": {"seq": 7, "type": "fetch", "limit": 10},
        "ack": {"seq": 8, "type": "ack", "ids": [mid]},
        "list": {"type": "list"},
        "broadcast": {"seq": 9, "type": "broadcast", "id": mid, "sent_at": 1700000000000,
                      "text": "hi", "signature": b64(b"\x03" * 64)},
        "ping": {"type": "ping"},
        "quit": {"type": "quit"},
    }
    for name, r in requests.items():
        write("request", name, json.dumps(r))
    write("request", "unknown_type", '{"seq":1,"type":"launch"}')
    write("request", "wrong_field_type", '{"seq":1,"type":"send","to":5}')
    write("request", "not_json", "{not json")

    delivered = {"id": mid, "from": alice, "envelope": b64(p256_env), "received_at": 1700000000123}
    responses = {
        "challenge": {"re": 1, "type": "challenge", "nonce": b64(b"\x55" * 32)},
        "code_sent": {"re": 2, "type": "code_sent", "phone": alice, "expires_in_s": 600},
        "registered": {"re": 3, "type": "registered", "phone": alice, "fingerprint": "ab" * 32,
                       "replaced_key": False},
        "logged_in": {"re": 4, "type": "logged_in", "phone": alice, "fingerprint": "ab" * 32,
                      "queued": 3},
        "user": {"re": 5, "type": "user", "phone": bob, "key_type": "p256",
                 "public_key": b64(spki(user)), "fingerprint": "cd" * 32,
                 "registered_at": 1700000000000},
        "accepted": {"re": 6, "type": "accepted", "id": mid},
        "messages": {"re": 7, "type": "messages", "messages": [delivered], "more": False},
        "acked": {"re": 8, "type": "acked", "deleted": 1},
        "users": {"re": 9, "type": "users", "users": [{"phone": alice, "fingerprint": "ab" * 32,
                  "home": "localhost:8088", "home_fingerprint": "ef" * 32, "online": True}]},
        "broadcast_sent": {"re": 10, "type": "broadcast_sent", "id": mid},
        "pong": {"re": 11, "type": "pong"},
        "bye": {"re": 12, "type": "bye"},
        "message": dict(delivered, type="message"),
        "broadcast": {"type": "broadcast", "id": mid, "from": alice, "sent_at": 1700000000000,
                      "text": "Hello, neighbourhood", "signature": b64(b"\x04" * 64)},
        "error": {"re": 13, "type": "error", "code": "not_logged_in", "message": "log in first"},
    }
    for name, r in responses.items():
        write("response", name, json.dumps(r))

    write("envelope", "p256_vector", p256_env)
    write("envelope", "rsa_vector", rsa_env)
    write("envelope", "truncated", p256_env[:100])

    statement = (b"carrier-v1 directory\0" + short(alice.encode()) + short(b"p256")
                 + medium(spki(user)) + struct.pack(">q", 1700000000000)
                 + medium(spki(home)) + short(b"home.example:5000"))
    entry = {"phone": alice, "key_type": "p256", "public_key": b64(spki(user)),
             "home_key": b64(spki(home)), "home_name": "home.example:5000",
             "registered_at": 1700000000000, "signature": b64(sign(home, statement)), "hops": 2}
    fp = hashlib.sha256(spki(home)).hexdigest()
    links = {
        "hello": {"type": "hello", "name": "localhost:8088", "version": 1},
        "directory": {"type": "directory", "entries": [entry]},
        "relay": {"type": "relay", "id": mid, "from": alice, "to": bob, "envelope": b64(p256_env),
                  "received_at": 1700000000000, "expires_at": 1702592000000, "path": [fp]},
        "relay_ack": {"type": "relay_ack", "ids": [mid]},
        "relay_refused": {"type": "relay_refused", "id": mid, "code": "unknown_recipient",
                          "message": "no such user"},
        "broadcast": {"type": "broadcast", "id": mid, "from": alice, "sent_at": 1700000000000,
                      "text": "hi", "signature": b64(b"\x05" * 64)},
        "presence": {"type": "presence", "origin": fp, "seq": 1700000000000, "online": [alice]},
        "ping": {"type": "ping"},
        "pong": {"type": "pong"},
    }
    for name, m in links.items():
        write("link", name, json.dumps(m))

    # statements: libFuzzer's arbitrary bytes; a few lengths to start from.
    for n in (8, 32, 128):
        write("statements", f"bytes_{n}", bytes(range(n)))

    config_dir = os.path.join(ROOT, "..", "config")
    for name in sorted(os.listdir(config_dir)):
        with open(os.path.join(config_dir, name), "rb") as f:
            write("config", name, f.read())
    write("config", "file_sink", '[otp]\ndelivery = "file"\nfile = "codes.txt"\nttl_secs = 600\n')
    write("config", "queue", "[queue]\nmessage_ttl_days = 30.5\nmax_messages_per_recipient = 10\n")


if __name__ == "__main__":
    main()
