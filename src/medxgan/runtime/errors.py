"""The one exception type for user mistakes.

The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its
traceback. A message about an argument starts with the library's name for it (``batch_size 5: must be
at least 2``) and names it in ``arg``; the CLI turns those names into its flags in one place
(``medxgan.cli.flagged``: ``--batch-size 5: must be at least 2``).
"""

from __future__ import annotations

import re


class MedxganError(Exception):
    """A user mistake (bad path, corrupt file, wrong shape, ...). The message names the culprit;
    ``arg``: the library argument(s) it is about (a name or a tuple of names), or None."""

    user_code = False  # True: raised by the user's own code (the CLI offers --traceback)

    def __init__(self, message: str, arg: str | tuple[str, ...] | None = None):
        super().__init__(" ".join(str(message).split()))  # always one line
        self.arg: tuple[str, ...] = (arg,) if isinstance(arg, str) else tuple(arg or ())


class UserCodeError(MedxganError):
    """The user's own code (a classifier's ``module:factory``, its forward, a TorchScript file) raised.
    The CLI prints one line (naming the classifier and the exception) and offers ``--traceback``."""

    user_code = True


class StorageError(MedxganError, OSError):
    """The disk refused a write (full, read-only, permissions): one line naming the operation and the path,
    ``writing runs/gan/config.json: No space left on device``. Also an OSError (``errno`` kept), so code
    that handles OSError around a write still does."""

    @classmethod
    def of(cls, operation: str, path: object, exc: OSError) -> "StorageError":
        why = exc.strerror or str(exc)
        if exc.strerror is None and exc.args and isinstance(exc.args[0], list) and exc.args[0]:  # shutil.Error: [(src, dst, why)]
            why = re.sub(r"^\[Errno \d+\] ", "", str(exc.args[0][0][-1]))
        err = cls(f"{operation} {path}: {why}")
        err.errno = exc.errno  # not filename/strerror: OSError's str() would then replace the message
        return err
