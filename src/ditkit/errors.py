"""Errors meant for the user: the CLI prints them as a single line and exits non-zero."""


class UserError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, mismatched config...).

    The message should be one line that says what is wrong and what to do.
    """
