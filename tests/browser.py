"""Headless Chromium for the tests that open pages: Debian's `chromium`, driven by Playwright.

`.ci/run` installs chromium when it is missing; Playwright's own browser downloads are never used (no
network at run time), so the executable is passed explicitly. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = os.environ.get("SELFHEAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


def chromium_executable() -> str:
    """The chromium binary, or a test failure that says how to install it."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if found is None:
        pytest.fail(
            f"Debian's chromium is not installed (looked for `chromium` on PATH and {CHROMIUM}): the browser "
            "tests need it. `.ci/run` installs it; locally run `sudo apt-get install chromium`."
        )
    return found


def _png_chunks(data: bytes) -> tuple[tuple[int, ...], bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    assert header is not None, "no IHDR chunk"
    return header, idat


def png_size(data: bytes) -> tuple[int, int, int]:
    """Width, height, and how many whole rows the compressed image data holds (== height when intact)."""
    (width, height, depth, colour, *_), idat = _png_chunks(data)
    stride = 1 + width * (depth // 8) * {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    return width, height, len(zlib.decompress(idat)) // stride


def decode_png(data: bytes) -> np.ndarray:
    """A tiny PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes) -> (height, width, channels)."""
    header, idat = _png_chunks(data)
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * bpp)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    previous = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        kind, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: a running sum per channel
            row = np.cumsum(line.reshape(width, bpp), axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + previous) % 256
        else:  # Average and Paeth depend on the pixel just decoded: one byte at a time
            up, cur = previous.tolist(), line.tolist()
            for i in range(len(cur)):
                left = cur[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur[i] = (cur[i] + (left + up[i]) // 2) % 256
                else:
                    corner = up[i - bpp] if i >= bpp else 0
                    guess = left + up[i] - corner
                    pa, pb, pc = abs(guess - left), abs(guess - up[i]), abs(guess - corner)
                    cur[i] = (
                        cur[i] + (left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner)
                    ) % 256
            row = np.asarray(cur, dtype=np.int64)
        out[y] = row
        previous = row
    return out.reshape(height, width, bpp)
