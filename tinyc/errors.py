"""The one exception type users see: a one-line message naming the problem and what to do."""


# What a frontend's converter raises when a corrupt model breaks its assumptions (options missing, inputs of the
# wrong count or shape): turned into a TinycError naming the operator, not left as an internal error.
MALFORMED = (AttributeError, TypeError, IndexError, KeyError, ValueError, ZeroDivisionError)


class TinycError(Exception):
    """A user-facing error. The CLI prints `error: <message>` on one line and exits with code 2."""

    def __init__(self, message: str):
        # One line, always: models can smuggle newlines into names that end up in messages.
        super().__init__(" ".join(str(message).split()))
