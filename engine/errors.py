"""Errors a user may see. ``str(error)`` is the whole message: short, specific, no traceback."""


class KhalaError(Exception):
    """Base of every error the engine reports to a person."""


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
