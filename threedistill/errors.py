"""User-facing errors: raised for bad input, printed by the CLI as one line, never as a traceback."""


class ThreeDistillError(Exception):
    """Base class for errors caused by user input (bad name, file, value); the CLI prints one line."""


class ConfigError(ThreeDistillError):
    """A config key is unknown or a value has the wrong type or range."""


class UnknownNameError(ThreeDistillError, KeyError):
    """A registry or catalogue lookup failed; the message lists the known names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class PriorLoadError(ThreeDistillError):
    """A prior directory is missing, incomplete or malformed."""


class SceneFormatError(ThreeDistillError):
    """A captured scene (COLMAP model, transforms.json, splat .ply) is missing, malformed or unsupported."""
