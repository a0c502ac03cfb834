"""The one error type users see: a message that says what is wrong and how to fix it."""

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """'did you mean a, b? ' for the close matches of ``word``, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f"did you mean {', '.join(close)}? " if close else ""


def one_line(err: BaseException) -> str:
    """An exception as one line: its type and its message with every run of whitespace one space
    (torchvision's and user code's messages span lines)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class OverfitlabError(Exception):
    """Bad input or a run that cannot go on. The CLI prints ``str(err)`` on one line, exit 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training or a study, with what it left and how to continue it.

    A KeyboardInterrupt, so it passes every ``except Exception`` on its way up (a study's
    worker, a backend) as the Ctrl-C it is, and the command line exits 130 with its message.
    """
