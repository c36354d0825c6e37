"""Exceptions shared by every rlft package.

`UserError` marks a problem with what the user asked for (a bad flag, a missing file, an unknown name).
Library code raises it (or a subclass); only the CLI turns it into a one-line message and exit code 2.
It lives in `prefs` because `prefs` is the bottom of the import graph: `reward`, `rlft` and `ui` all
depend on it, so they can share one base class without cycles.
"""


class UserError(Exception):
    """Bad input from the user: the message is shown as one line, the CLI exits with code 2."""


class NotFoundError(UserError):
    """A named thing (model, reward version, run, image) does not exist; the message lists valid names."""


class StorageError(UserError):
    """The disk or the database refused to store something (full, read-only, not a database): nothing was
    half-written, and the message names what to free or fix."""
