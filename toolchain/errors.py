"""User-facing errors: the CLI turns these into one line and exit status 2."""


class UserError(Exception):
    """A problem the user can fix (bad file, bad option, model too large).

    The message names the problem and, where possible, the fix.
    """
