"""The one exception type for errors a user can cause; the CLI prints its message on one line."""


class VideoCMError(Exception):
    """A problem with the user's input, files or environment; the message names the input and the fix."""


def read_user_text(path, what: str = "") -> str:
    """A text file the user gave (prompts, captions, a config), read as UTF-8 (a leading byte-order mark dropped);
    a file in another encoding is a one-line error naming the first bad byte and the fix."""
    from pathlib import Path

    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise VideoCMError(f"{what + ' ' if what else ''}{path} is not UTF-8 text (byte 0x{data[error.start]:02x} on "
                           f"line {line}); save it as UTF-8 and run again") from None


class reading_weights:
    """``with reading_weights(path):`` around loading a saved part (a network's folder, a safetensors file):
    a missing, truncated or damaged weights file becomes a one-line error naming it, not a loader's traceback."""

    def __init__(self, path, what: str = "weights") -> None:
        self.path, self.what = path, what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, traceback) -> bool:
        if error is None or isinstance(error, VideoCMError):
            return False
        from safetensors import SafetensorError

        if not isinstance(error, (OSError, SafetensorError, EOFError)) and not (
                isinstance(error, RuntimeError) and "size mismatch" in str(error)):
            return False
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        reason = lines[0].split(" for '")[0][:160] if lines else type(error).__name__
        raise VideoCMError(f"the {self.what} in {self.path} cannot be read ({reason}): the file is missing, "
                           f"truncated or damaged; copy the folder again or re-save it") from None
