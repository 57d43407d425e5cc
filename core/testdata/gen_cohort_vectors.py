#!/usr/bin/env python3
"""Writes cohort-vectors.json from an implementation independent of the Rust one.

bucket = fmix64(fnv1a64(salt ++ ":" ++ identity)) mod 10000

Run: python3 core/testdata/gen_cohort_vectors.py > core/testdata/cohort-vectors.json
"""
import json

MASK = (1 << 64) - 1


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def fmix64(k: int) -> int:
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & MASK
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & MASK
    k ^= k >> 33
    return k


def vector(salt: str, identity: bytes) -> dict:
    h = fnv1a64(salt.encode() + b":" + identity)
    return {
        "salt": salt,
        "identity_hex": identity.hex(),
        "identity": identity.decode("utf-8", "replace"),
        "fnv1a64": f"{h:016x}",
        "fmix64": f"{fmix64(h):016x}",
        "bucket": fmix64(h) % 10000,
    }


CASES = [
    ("checkout-7", b"user-1"),
    ("checkout-7", b"user-2"),
    ("checkout-7", b"user-3"),
    ("checkout-7", b"alice"),
    ("checkout-7", b""),
    ("checkout-8", b"user-1"),
    ("search", b"42"),
    ("search", "Zoë".encode()),
    ("search", "日本語".encode()),
    ("s", b"\xff\xfe\x00binary"),
    ("a:b", b"c"),
    ("a", b"b:c"),
    ("long", b"x" * 1024),
]

if __name__ == "__main__":
    print(json.dumps([vector(s, i) for s, i in CASES], indent=1))
