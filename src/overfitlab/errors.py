"""The one error type users see: a message that says what is wrong and how to fix it."""


class OverfitlabError(Exception):
    """Bad input or a run that cannot go on. The CLI prints ``str(err)`` on one line, exit 2."""
