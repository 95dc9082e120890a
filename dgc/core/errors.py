"""The library's error type for problems with the user's input, and its warning type."""


class DGCError(ValueError):
    """Raised for every problem with what the user gave us (files, arguments, arrays). A subclass of
    ValueError so generic callers can catch it, and distinct from bugs so the command line can print
    it as one clear line instead of a traceback."""


class DGCWarning(UserWarning):
    """A setting that works but costs the user something they may not expect (shown as one line)."""
