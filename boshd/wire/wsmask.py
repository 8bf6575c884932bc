"""RFC 6455 §5.1: a server must fail the connection when a client frame is not masked.

aiohttp reads the mask bit but does not require it, so :class:`MaskCheck` follows the frame
boundaries of the raw byte stream (headers only; payload bytes are skipped, not copied) and
reports the first unmasked frame. Pure: bytes in, a verdict out.
"""

from __future__ import annotations


class MaskCheck:
    __slots__ = ("_header", "_skip", "violated")

    def __init__(self) -> None:
        self._header = bytearray()  # an incomplete frame header
        self._skip = 0  # payload bytes of the current frame still to come
        self.violated = False

    def feed(self, data: bytes) -> bool:
        """Account ``data``; False once an unmasked frame has been seen."""
        pos, end = 0, len(data)
        if not self._header and not self._skip:
            pos = self._whole_frames(data)
            if pos >= end:
                self._skip = pos - end  # the last frame's payload goes on in the next chunk
                return not self.violated
        while pos < end and not self.violated:
            if self._skip:  # inside a payload
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                continue
            need = self._header_length() or 2  # first the two fixed bytes, then the rest
            take = min(need - len(self._header), end - pos)
            self._header += data[pos : pos + take]
            pos += take
            full = self._header_length()
            if full is None or len(self._header) < full:
                continue
            if not self._header[1] & 0x80:
                self.violated = True
                break
            self._skip = self._payload_length()
            self._header.clear()
        return not self.violated

    def _whole_frames(self, data: bytes) -> int:
        """The common case, a chunk that starts at a frame boundary: walk the frame headers
        in place. Returns where it stopped: past the end (inside a payload), at the end, or
        at a header split across chunks, which the general loop in :meth:`feed` picks up."""
        pos, end = 0, len(data)
        while pos + 2 <= end:
            second = data[pos + 1]
            if not second & 0x80:
                self.violated = True
                return end
            short = second & 0x7F
            if short < 126:
                length, header = short, 6
            elif short == 126:
                if pos + 4 > end:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 4], "big"), 8
            else:
                if pos + 10 > end:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 10], "big"), 14
            if pos + header > end:
                break
            pos += header + length
        return pos

    def _header_length(self) -> int | None:
        if len(self._header) < 2:
            return None
        short = self._header[1] & 0x7F
        ext = 2 if short == 126 else 8 if short == 127 else 0
        mask = 4 if self._header[1] & 0x80 else 0
        return 2 + ext + mask

    def _payload_length(self) -> int:
        short = self._header[1] & 0x7F
        if short == 126:
            return int.from_bytes(self._header[2:4], "big")
        if short == 127:
            return int.from_bytes(self._header[2:10], "big")
        return short
