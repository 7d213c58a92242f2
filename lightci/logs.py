"""A build's log.txt: lines as they arrive, stage headers, and secrets masked as ***."""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

MASK = "***"


def secret_variants(value: str) -> set[str]:
    """Every form a script is likely to print a secret in.

    The whole value; each line of a multi-line value; and its base64 form at
    each of the three byte alignments, cut to the characters that depend on the
    secret alone, so `echo $S | base64` and `base64 <<< "x$S"` are caught too.
    """
    variants = {value} if value else set()
    lines = [line.strip() for line in value.splitlines()]
    variants |= {line for line in lines if len(line) >= 4}
    raw = value.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        core = encoded[(offset * 8 + 5) // 6 : (offset + len(raw)) * 8 // 6]
        if len(core) >= 4:
            variants.add(core)
    if len(raw) >= 3:
        variants.add(base64.b64encode(raw).decode().rstrip("="))
    return {v for v in variants if v}


class Masker:
    def __init__(self, secrets: list[str]):
        variants: set[str] = set()
        for value in secrets:
            variants |= secret_variants(value)
        # Longest first, so a secret is never half-masked by one of its parts.
        ordered = sorted(variants, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text


class BuildLog:
    """A file-like sink for sh: buffers to whole lines, masks, appends, flushes.

    Followers (`lightci log -f`, the API, SSE) read the file as it grows, so
    every complete line is flushed at once and no DB write happens per line.
    """

    def __init__(self, path: Path, masker: Masker | None = None):
        self.path = path
        self.mask = masker or Masker([])
        self._file = open(path, "ab", buffering=0)
        self._partial = b""

    def write(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        data = self._partial + data
        complete, sep, self._partial = data.rpartition(b"\n")
        if sep:
            self._emit(complete + sep)
        if len(self._partial) > 65536:  # a very long line without a newline
            self._emit(self._partial)
            self._partial = b""

    def flush(self) -> None:
        if self._partial:
            self._emit(self._partial + b"\n")
            self._partial = b""

    def _emit(self, chunk: bytes) -> None:
        text = self.mask(chunk.decode("utf-8", "replace"))
        self._file.write(text.encode())

    def note(self, message: str) -> None:
        """A line of lightci's own, stamped with the wall-clock time."""
        self.flush()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        self._emit(f"[lightci {stamp} UTC] {message}\n".encode())

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> BuildLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
