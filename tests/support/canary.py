"""Files that tell whether anything opened them, without strace.

:class:`FifoCanary` is a named pipe. Opening a FIFO for reading blocks until a writer comes,
so a parser that tried to load it would hang; a watcher thread keeps trying to open the write
end without blocking, which only succeeds while somebody holds the read end. When it
succeeds it records the fact and closes at once, so the reader sees end of file and goes on
(the test then fails on :attr:`opened`, instead of hanging). A regular file next to it holds a
secret line whose appearance anywhere proves it was read.
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path
from types import TracebackType


class FifoCanary:
    """``with FifoCanary() as c:`` ... ``assert not c.opened``; ``c.url``/``c.secret_url``."""

    SECRET = b"canary-secret-4f1d9c"

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="boshd-canary-")
        base = Path(self._dir.name)
        self.path = base / "fifo"
        self.secret_path = base / "secret.txt"
        self.missing_path = base / "does-not-exist"
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="fifo-canary", daemon=True)

    @property
    def url(self) -> str:
        return self.path.as_uri()

    @property
    def secret_url(self) -> str:
        return self.secret_path.as_uri()

    @property
    def missing_url(self) -> str:
        return self.missing_path.as_uri()

    def __enter__(self) -> FifoCanary:
        os.mkfifo(self.path)
        self.secret_path.write_bytes(self.SECRET + b"\n")
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)
        self._dir.cleanup()

    def _watch(self) -> None:
        while not self._stop.wait(0.001):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no reader: nobody opened it
                    continue
                raise
            self.opened = True
            os.close(fd)  # the reader sees end of file and is not stuck
