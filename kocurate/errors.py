"""The one error type users see: a single line that names the place and the fix."""


class KocurateError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class InputError(KocurateError):
    """Bad input data: a file, line, row or column is wrong."""
