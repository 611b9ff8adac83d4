"""One base class for problems the user can fix; the command line prints them as one clear line."""


class UserError(ValueError):
    """Bad input, arguments or environment: reported without a traceback."""
