"""The CLI's progress bar: drawn only on a terminal, never into JSON or piped output, and never changes the items."""
from __future__ import annotations

import io
import os
import pty
import sys

import pytest

from enroll import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_items_pass_through_unchanged_when_piped(monkeypatch: pytest.MonkeyPatch) -> None:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress.tracked(iter(range(10)), 10, "x", as_json=False)) == list(range(10))
    assert out.getvalue() == "" and err.getvalue() == ""


def test_bar_only_on_a_terminal_for_long_plain_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdout", _Tty())
    monkeypatch.setattr(sys, "stderr", _Tty())
    assert progress.wanted(10, as_json=False)
    assert not progress.wanted(10, as_json=True)
    assert not progress.wanted(progress.MIN_ITEMS - 1, as_json=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())   # piped output
    assert not progress.wanted(10, as_json=False)


def test_bar_is_drawn_on_stderr_of_a_real_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(os.dup(follower), "w") as tty_out, os.fdopen(os.dup(follower), "w") as tty_err:
            monkeypatch.setattr(sys, "stdout", tty_out)
            monkeypatch.setattr(sys, "stderr", tty_err)
            assert list(progress.tracked(iter("abcdef"), 6, "enrolling", as_json=False)) == list("abcdef")
            tty_err.flush()
        drawn = os.read(leader, 65536).decode(errors="replace")
    finally:
        os.close(leader)
        os.close(follower)
    assert "enrolling" in drawn
