"""The one exception type for user mistakes.

The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class MedxganError(Exception):
    """A user mistake (bad path, corrupt file, wrong shape, ...). The message names the culprit."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
