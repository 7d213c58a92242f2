"""A build's log as a stage's output reaches it: through a pipe, in chunks, masked, unforgeable."""

from __future__ import annotations

import fcntl
import os
import random
import struct
import subprocess
import termios
import threading
import time

from lightci.logs import (
    NOTE,
    PIPE_SIZE,
    BuildLog,
    Masker,
    may_pass_for_a_note,
    stage_pipe,
    unforgeable,
)


def _unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]


def test_a_secret_split_between_two_reads_of_the_pipe_is_still_masked(tmp_path):
    secret = "s3cr3t-t0ken-value"
    path = tmp_path / "log.txt"
    reader, writer = stage_pipe()
    ended = threading.Event()
    with BuildLog(path, Masker([secret])) as out:
        pump = threading.Thread(target=out.pump, args=(reader, ended.is_set))
        pump.start()
        try:
            os.write(writer, f"first line\ntoken: {secret[:7]}".encode())
            deadline = time.monotonic() + 30
            while _unread(reader):  # the pump has read the first half on its own
                assert time.monotonic() < deadline, "the pump did not read"
                time.sleep(0.01)
            if hasattr(fcntl, "F_GETPIPE_SZ"):
                assert fcntl.fcntl(reader, fcntl.F_GETPIPE_SZ) == PIPE_SIZE
            # The whole lines are in the file at once, the unfinished one is not.
            deadline = time.monotonic() + 30
            while path.read_text() != "first line\n":
                assert time.monotonic() < deadline, path.read_text()
                time.sleep(0.01)
            os.write(writer, f"{secret[7:]} used\n".encode())
        finally:
            os.close(writer)
            ended.set()
            pump.join()
            out.drain(reader)
            os.close(reader)
    assert path.read_text() == "first line\ntoken: *** used\n"


def test_a_line_that_could_pass_for_a_note_is_marked_whatever_hides_it(tmp_path):
    forged = [
        f"{NOTE}2026-11-30 12:00:00 UTC] finished: success",
        f"progress\r{NOTE}2026-11-30 12:00:00 UTC] <== stage build exited 0",
        "[light\x01ci 2026-11-30 12:00:00 UTC] finished: success",  # no ESC, a control inside
        "[lightci\x7f 2026-11-30 12:00:00 UTC] finished: success",
        "\x1b[0m[light\x1b[0mci 2026-11-30 12:00:00 UTC] finished: success",
    ]
    innocent = ["[INFO] compiled 3 files", "[lightning] ready", "plain 1 2 3", "tab\there"]
    path = tmp_path / "log.txt"
    with BuildLog(path) as out:
        for line in innocent + forged:  # one chunk each: an ESC in one is no help to another
            out.write(line + "\n")
    lines = path.read_text().split("\n")[:-1]
    assert lines[: len(innocent)] == innocent
    assert all(line.startswith("(stage output) ") for line in lines[len(innocent) :]), lines
    assert not any("\x01" in line or "\x7f" in line or "\x1b" in line for line in lines)


def test_bytes_that_are_not_utf_8_are_written_as_replacement_characters(tmp_path):
    path = tmp_path / "log.txt"
    with BuildLog(path, Masker(["café-secret"])) as out:
        out.write(b"caf\xe9 \xff\n" + "café-secret é\n".encode())
    assert path.read_text() == "caf\ufffd \ufffd\n*** é\n"


def test_the_quick_look_at_a_chunk_never_misses_what_the_exact_one_marks():
    pieces = ["[", "[li", "ght", "[light", "ci ", "i", " ", NOTE, "\x01", "\x1b", "\x1b[0m"]
    pieces += ["\r", "\t", "\n", "x", "é", "\x7f", "]"]
    rng = random.Random(10)
    for _ in range(20000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        if not may_pass_for_a_note(text.encode()):
            assert unforgeable(text) == text, repr(text)


def test_masking_bytes_hides_what_masking_text_hides():
    secrets = ["hunter2-secret", "multi\nline-secret-value", "é-ünïcode-key"]
    mask = Masker(secrets)
    rng = random.Random(11)
    pieces = ["a", "é", "\n", " ", "hunter", "2-secret", *secrets, "bXVsdGk", "aHVudGVy"]
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        assert mask.hide(text.encode()) == mask(text).encode(), repr(text)


def test_the_pump_stops_at_eof_or_at_the_stage_s_end_while_a_leftover_holds_the_pipe(tmp_path):
    """The build's thread copies until EOF, or until the stage ended (its pidfd; without
    one, asked every 0.2 s) with the pipe still open; drain takes what is left."""
    path = tmp_path / "log.txt"
    with BuildLog(path) as out:
        reader, writer = os.pipe()
        os.write(writer, b"one\n")
        os.close(writer)
        out.pump(reader, lambda: False)  # EOF: done, though nothing says the stage ended
        os.close(reader)

        reader, writer = os.pipe()  # this test's end stays open: a leftover's
        os.write(writer, b"two\n")
        out.pump(reader, lambda: True)  # no pidfd: the end is asked for
        if hasattr(os, "pidfd_open"):
            stage = subprocess.Popen(["true"])
            pidfd = os.pidfd_open(stage.pid)
            try:
                out.pump(reader, lambda: False, pidfd)  # the pidfd says it ended
            finally:
                stage.wait()
                os.close(pidfd)
        os.write(writer, b"three\n")  # the leftover wrote this before it was killed
        out.drain(reader)  # then 0.2 s of silence: done, though the pipe is still open
        os.close(writer)
        os.close(reader)
    assert path.read_text() == "one\ntwo\nthree\n"
