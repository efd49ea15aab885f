"""Errors a user may see. ``str(error)`` is the whole message: short, specific, no traceback."""

# The longest message a person is shown, on one line: a message built from a hostile file
# could otherwise be gigabytes long.
MESSAGE_LIMIT = 1000


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one line of at most ``limit`` characters (line breaks become spaces, "…" where cut)."""
    cut = text[: limit + 1]
    line = " ".join(part.strip() for part in cut.splitlines() if part.strip())
    return line if len(line) <= limit and len(text) <= limit else line[: limit - 1] + "…"


class KhalaError(Exception):
    """Base of every error the engine reports to a person. ``str`` is one line of bounded length."""

    def __str__(self) -> str:
        return one_line(super().__str__())


class ConfigError(KhalaError):
    """A *_megatron_args.json or decoder_config.yaml value the engine cannot honour."""


class WeightsError(KhalaError):
    """A weight file is missing, truncated, corrupt or of the wrong shape."""


class PromptError(KhalaError):
    """The prompt cannot be built: nothing to say, unreadable lyrics, bad tokenizer."""


class RequestError(KhalaError):
    """A request field is out of range (duration, temperature, top-k, …)."""


class OutputError(KhalaError):
    """The output file cannot be written."""


class Cancelled(KhalaError):
    """The user cancelled; nothing partial was kept."""

    def __init__(self, message: str = "Cancelled.") -> None:
        super().__init__(message)


class NonFiniteError(KhalaError):
    """A stage produced NaN or infinite values (e.g. float16 overflow): the pipeline reruns the
    stage once in a safe dtype before it gives up."""

    def __init__(self, stage: str, where: str, dtype: str = "") -> None:
        self.stage, self.where, self.dtype = stage, where, dtype
        in_dtype = f" in {dtype}" if dtype else ""
        super().__init__(f"The {stage} stage produced non-finite values{in_dtype} ({where}).")
