"""Chain address and symbol checks for what callers send: an address is validated by its chain's own rules.

Why checksums and not a pattern: a mistyped address would silently become a new, never-seen key whose features
are all zero; Bitcoin's base58check and bech32 checksums catch a wrong character. Ethereum addresses are 20 bytes
of hex, compared lower-case (mixed-case EIP-55 checksumming needs Keccak, which the standard library lacks).
"""

from __future__ import annotations

import hashlib
import re

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_INDEX = {c: i for i, c in enumerate(_BECH32)}
_BECH32M_CONST = 0x2BC830A3


def ethereum_address(text: str) -> str:
    """`0x` + 40 hex digits, returned lower-case; ValueError otherwise."""
    if not _HEX40.fullmatch(text):
        raise ValueError("not an Ethereum address (0x followed by 40 hex digits)")
    return text.lower()


def _base58check(text: str) -> bytes | None:
    if not 26 <= len(text) <= 35 or any(c not in _B58_INDEX for c in text):
        return None
    n = 0
    for c in text:
        n = n * 58 + _B58_INDEX[c]
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(text) - len(text.lstrip("1"))) + raw
    if len(raw) != 25:
        return None
    body, check = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(body).digest()).digest()[:4] != check:
        return None
    return body


def _bech32_polymod(values: list[int]) -> int:
    gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            chk ^= gen[i] if (top >> i) & 1 else 0
    return chk


def _segwit(text: str) -> bool:
    if text.lower() != text and text.upper() != text:
        return False
    t = text.lower()
    hrp, sep, data = t.rpartition("1")
    if not sep or hrp not in ("bc", "tb", "bcrt") or not 6 < len(data) <= 84:
        return False
    if any(c not in _BECH32_INDEX for c in data):
        return False
    values = [_BECH32_INDEX[c] for c in data]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    const = _bech32_polymod(expanded + values)
    version = values[0]
    if version > 16 or const != (1 if version == 0 else _BECH32M_CONST):
        return False
    bits = (len(values) - 7) * 5  # data part after the version and before the 6-character checksum
    program_len = bits // 8
    return 2 <= program_len <= 40 and (version != 0 or program_len in (20, 32))


def bitcoin_address(text: str) -> str:
    """A base58check (P2PKH/P2SH, main or test net) or bech32/bech32m (segwit) address, returned as given."""
    body = _base58check(text)
    if body is not None and body[0] in (0x00, 0x05, 0x6F, 0xC4):
        return text
    if _segwit(text):
        return text
    raise ValueError("not a Bitcoin address (base58check or bech32 with a valid checksum)")


def chain_address(chain: str, text: str) -> str:
    """The address normalised for `chain`; ValueError naming the rule it breaks."""
    if chain == "ethereum":
        return ethereum_address(text)
    if chain == "bitcoin":
        return bitcoin_address(text)
    raise ValueError(f"unknown chain {chain!r}")


_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")


def market_symbol(text: str) -> str:
    """An exchange symbol as ingest keys it: upper case, no separator (`btc/usdt`, `BTC-USDT` -> `BTCUSDT`)."""
    s = text.strip().upper().replace("/", "").replace("-", "").replace("_", "")
    if not _SYMBOL.fullmatch(s):
        raise ValueError("not a market symbol (2-30 letters and digits, e.g. BTCUSDT)")
    return s
