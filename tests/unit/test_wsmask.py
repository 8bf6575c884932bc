"""Client frame masking is required (RFC 6455 §5.1, W-MSG-04), checked on raw bytes."""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.wire.wsmask import MaskCheck


def frame(payload: bytes, *, masked: bool = True, opcode: int = 1, fin: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 1 << 16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if masked:
        key = os.urandom(4)
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


@settings(deadline=None, max_examples=60)
@given(
    sizes=st.lists(st.sampled_from([0, 1, 125, 126, 300, 65535, 65536, 70000]), max_size=6),
    chunk=st.integers(1, 4096),
)
def test_masked_frames_in_any_chunking_pass(sizes: list[int], chunk: int) -> None:
    """Masked frames of every length class pass, however the bytes are split (W-MSG-04)."""
    data = b"".join(frame(b"x" * n) for n in sizes)
    check = MaskCheck()
    for i in range(0, len(data), chunk):
        assert check.feed(data[i : i + chunk])
    assert not check.violated


@settings(deadline=None, max_examples=60)
@given(before=st.integers(0, 3), size=st.sampled_from([0, 5, 200, 70000]), chunk=st.integers(1, 50))
def test_unmasked_frame_detected_after_masked_ones(before: int, size: int, chunk: int) -> None:
    """An unmasked frame is caught wherever it falls in the stream (W-MSG-04)."""
    data = b"".join(frame(b"y" * 10) for _ in range(before)) + frame(b"z" * size, masked=False)
    check = MaskCheck()
    results = [check.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    assert results[-1] is False
    assert check.violated


@settings(deadline=None, max_examples=60)
@given(
    sizes=st.lists(st.sampled_from([0, 3, 125, 126, 300, 65536]), min_size=1, max_size=5),
    bad=st.integers(-1, 4),
    cut=st.integers(0, 20),
)
def test_frame_aligned_chunks_take_the_fast_walk(sizes: list[int], bad: int, cut: int) -> None:
    """Chunks that start at frame boundaries (the usual case) give the same verdict as any
    other split, including a header cut across two chunks (W-MSG-04)."""
    frames = [frame(b"q" * n, masked=(i != bad)) for i, n in enumerate(sizes)]
    unmasked = 0 <= bad < len(sizes)
    check = MaskCheck()
    results = [check.feed(f[:cut]) and check.feed(f[cut:]) for f in frames]
    assert check.violated is unmasked
    assert all(results) is not unmasked
