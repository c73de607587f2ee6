"""Errors meant for the user (the CLI prints them as a single line and exits non-zero), and the one
helper that counts things in the words a user reads."""


def plural(count: int, word: str, many: str | None = None) -> str:
    """`1 image`, `2 images` (`many` for irregular plurals)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


class UserError(Exception):
    """A problem the user can fix (bad path, wrong checkpoint, mismatched config...).

    The message should be one line that says what is wrong and what to do.
    """
