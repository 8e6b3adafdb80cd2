"""The one exception type users see: a one-line message naming the problem and what to do."""


class TinycError(Exception):
    """A user-facing error. The CLI prints `error: <message>` on one line and exits with code 2."""

    def __init__(self, message: str):
        # One line, always: models can smuggle newlines into names that end up in messages.
        super().__init__(" ".join(str(message).split()))
