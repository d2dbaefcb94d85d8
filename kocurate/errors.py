"""The one error type users see: a single line that names the place and the fix."""


class KocurateError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class InputError(KocurateError):
    """Bad input data: a file, line, row or column is wrong."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
