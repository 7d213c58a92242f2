"""A build's log.txt: lines as they arrive, stage headers, and secrets masked as ***.

lightci's own lines (notes) start with "[lightci "; no line of a stage's output
does: one that would look like a note, once escape sequences and control
characters are taken out, is written with "(stage output) " in front and its
control characters shown as ^X, so a build cannot forge or overwrite a note.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import select
import time
from collections.abc import Callable
from pathlib import Path

MASK = "***"
NOTE = "[lightci "
FORGED = "(stage output) "
LINE_MAX = 64 * 1024  # bytes; a longer line is split into lines of this size
READ_SIZE = 128 * 1024  # bytes read from a stage's output at once, at most: fits a CPU cache
PIPE_SIZE = 1024 * 1024  # Linux's default cap for a pipe: fewer, larger reads
# ANSI escape sequences (CSI, OSC, charset, two-byte); control characters but tab (and newline).
_ESCAPES = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[()][A-Z0-9]|\x1b.?"
)
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CREDENTIALS = re.compile(r"(//)[^/\s]+@")  # up to the last @: a password may hold one
_HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_HIDDEN_BYTES = bytes([*range(0x09), *range(0x0B, 0x20), 0x7F])


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
        self._encoded = [v.encode() for v in ordered]
        self._bytes = re.compile(b"|".join(map(re.escape, self._encoded))) if ordered else None
        self.reach = max(map(len, self._encoded), default=0)  # bytes of the longest variant

    def __call__(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern else text

    def hide(self, data: bytes) -> bytes:
        """The same as calling it, on valid UTF-8: no secret starts inside a character."""
        # A memmem per variant is quicker than the regex's scan, and most chunks hold none.
        if self._bytes is None or not any(v in data for v in self._encoded):
            return data
        return self._bytes.sub(MASK.encode(), data)

    def straddled(self, data: bytes, cut: int) -> int:
        """`cut`, moved past the end of any secret it would split in data."""
        moved = self._bytes is not None
        while moved:
            moved = False
            for found in self._bytes.finditer(data, max(0, cut - self.reach), cut + self.reach):
                if found.start() < cut < found.end():
                    cut, moved = found.end(), True
                    break
        return cut


def may_pass_for_a_note(data: bytes) -> bool:
    """False only when no line of data can look like a note: a cheap look per chunk.

    Taking characters out never adds a "[" (one memchr answers for most
    output); without ESC only control characters are taken out (one translate
    answers exactly). A chunk with both "[" and ESC gets unforgeable's look.
    """
    if b"[" not in data:
        return False
    if b"\x1b" in data:
        return True
    return NOTE.encode() in data.translate(None, _HIDDEN_BYTES)


def unforgeable(text: str) -> str:
    """A stage's lines as written: each that could pass for a note is marked."""
    if NOTE not in _HIDDEN.sub("", _ESCAPES.sub("", text)):
        return text  # the usual case: one look at the whole chunk
    return "\n".join(_unforgeable_line(line) for line in text.split("\n"))


def _unforgeable_line(line: str) -> str:
    if NOTE not in _CONTROLS.sub("", _ESCAPES.sub("", line)):
        return line
    return FORGED + _CONTROLS.sub(lambda m: "^" + chr(ord(m[0]) ^ 64), line)


class BuildLog:
    """A file-like sink for a build's output: whole lines, masked, appended, flushed.

    Followers (`lightci log -f`, the API, SSE) read the file as it grows, so
    every complete line is written at once (no buffer of ours, O_APPEND) and
    no DB write happens per line. The work is per chunk, never per line.
    Memory stays bounded whatever a stage prints: a line longer than LINE_MAX
    is split (never inside a secret, so masking still sees it whole). When the
    disk is full, output is dropped rather than stalling the stage, and `lost`
    says so.
    """

    def __init__(self, path: Path, masker: Masker | None = None):
        self.path = path
        self.mask = masker or Masker([])
        self._file = open(path, "ab", buffering=0)
        self._partial = bytearray()  # an unfinished line; deleting its head is cheap
        self.lost = ""  # why some of the log could not be written
        self._lost_bytes = 0

    def write(self, data: bytes | str) -> None:
        self._partial += data.encode() if isinstance(data, str) else data
        self._drain(final=False)

    def flush(self) -> None:
        if self._partial:
            self._drain(final=True)

    def _drain(self, final: bool) -> None:
        """Write the whole lines held (over-long ones split); keep the rest for later."""
        buf, start, done, pieces = self._partial, 0, 0, []
        while start < len(buf):
            newline = buf.rfind(b"\n", start, start + LINE_MAX)
            if newline >= 0:  # whole lines, none of them over LINE_MAX
                start = newline + 1
                continue
            if len(buf) - start > LINE_MAX and (final or len(buf) - start >= self._hold):
                end = self._cut(buf, start, start + LINE_MAX)
            elif final:
                end = len(buf)
            else:
                break
            pieces += [buf[done:end], b"\n"]
            start = done = end
        if start:
            pieces.append(buf[done:start])
            del buf[:start]
            self._emit(pieces[0] if len(pieces) == 1 else b"".join(pieces))

    @property
    def _hold(self) -> int:
        """Bytes of an unfinished line kept before splitting it: enough to see a secret whole."""
        return LINE_MAX + self.mask.reach

    def _cut(self, buf: bytearray, start: int, cut: int) -> int:
        """Where to split an over-long line: not inside a UTF-8 character, nor a secret."""
        while cut > start + 1 and buf[cut] & 0xC0 == 0x80:
            cut -= 1
        return self.mask.straddled(buf, cut)

    def pump(self, fd: int, ended: Callable[[], bool], ended_fd: int | None = None) -> None:
        """Copy a stage's output from a pipe, in chunks of up to READ_SIZE bytes, until
        EOF (every writer closed it: the stage's wait does the rest) or until the
        stage's process has ended with the pipe still open: `ended_fd` (a pidfd) turns
        readable then, and without one `ended()` is asked every 0.2 s. The thread that
        waits for the stage does the copying: no thread of its own, no hand-over per
        chunk. What the pipe still holds then (leftovers may keep writing): drain.
        """
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if ended_fd is not None:
            poller.register(ended_fd, select.POLLIN)
        while True:
            ready = {f for f, _ in poller.poll(None if ended_fd is not None else 200)}
            if fd in ready:
                chunk = os.read(fd, READ_SIZE)
                if not chunk:
                    return
                self.write(chunk)
            if (ended_fd in ready) if ended_fd is not None else ended():
                return

    def drain(self, fd: int, linger: float = 5.0) -> None:
        """After the stage ended and its leftovers were killed: the rest of the pipe, until
        EOF, 0.2 s without output, or `linger` s in all (a process that escaped with the
        pipe open must not hold the build)."""
        stop_by, poller = time.time() + linger, select.poll()
        poller.register(fd, select.POLLIN)
        while poller.poll(200) and time.time() < stop_by:
            chunk = os.read(fd, READ_SIZE)
            if not chunk:
                return
            self.write(chunk)

    def _emit(self, chunk: bytes | bytearray) -> None:
        if not chunk.isascii():  # the log is UTF-8 whatever the stage printed
            chunk = chunk.decode("utf-8", "replace").encode()
        chunk = self.mask.hide(chunk)
        if may_pass_for_a_note(chunk):
            chunk = unforgeable(chunk.decode()).encode()
        self._append(chunk)

    def _append(self, data: bytes | bytearray) -> None:
        try:
            self._file.write(data)
        except OSError as exc:  # a full disk: keep reading, so the stage never stalls on us
            self._lost_bytes += len(data)
            self.lost = f"disk full: {self._lost_bytes} bytes of the build log lost ({exc})"

    def note(self, message: str) -> None:
        """A line of lightci's own, stamped with the wall-clock time."""
        self.flush()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        message = _CONTROLS.sub(" ", message)
        self._append((self.mask(f"{NOTE}{stamp} UTC] {message}") + "\n").encode())

    def close(self) -> None:
        self.flush()
        self._file.close()

    def __enter__(self) -> BuildLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stage_pipe() -> tuple[int, int]:
    """(reader, writer) for a stage's output, as large as Linux allows from the start: a
    fast stage blocks less, also before its build's thread starts reading (the stage's
    row is written first), and is read in fewer calls."""
    reader, writer = os.pipe()
    resize = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if resize is None:
        return reader, writer
    try:
        fcntl.fcntl(reader, resize, PIPE_SIZE)
    except OSError:  # over the user's pipe quota: the default size only costs more calls
        pass
    return reader, writer


def hide_credentials(text: str) -> str:
    """https://user:token@host/... -> https://***@host/... for logs, errors and the API."""
    return _CREDENTIALS.sub(rf"\1{MASK}@", text)
