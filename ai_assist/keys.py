"""API keys: from a key file (re-read when its mtime changes, so a rotation needs no restart) or settings.

The key is only ever handed to the SDK client; it is never logged, never put in a transcript, and
its repr is masked.
"""
from __future__ import annotations

import os
import threading


class KeySource:
    """A provider's key: the file named by `<PROVIDER>_API_KEY_FILE` wins over the settings value."""

    def __init__(self, value: str = "", path: str = "") -> None:
        self._value = value.strip()
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._file_key = ""
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"KeySource(path={self._path!r}, set={bool(self.get())})"

    def get(self) -> str:
        if not self._path:
            return self._value
        try:
            st = os.stat(self._path)
        except OSError:
            return ""  # a missing key file means "not configured", never a stale key
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            with self._lock:
                try:
                    with open(self._path, encoding="utf-8") as fh:
                        self._file_key = fh.read().strip()
                except OSError:
                    self._file_key = ""
                self._stamp = stamp
        return self._file_key
