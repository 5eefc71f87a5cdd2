"""The one exception type for errors a user can cause; the CLI prints its message on one line."""


class VideoCMError(Exception):
    """A problem with the user's input, files or environment; the message names the input and the fix."""
