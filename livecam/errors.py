"""The one exception type for a user's mistake or a missing piece the user can fix.

The CLI prints its message on one line and exits non-zero, with no traceback. Anything else that escapes
is a bug and keeps its traceback.
"""


class LivecamError(Exception):
    """A problem the user can fix; the message says what is wrong and what to do."""
