"""OmegaConf resolvers that the configs use (registered when trainlab is imported)."""

from __future__ import annotations

from datetime import datetime

from omegaconf import OmegaConf


def timestamp() -> str:
    """Microsecond timestamp: two runs started in the same second still get their own directory."""
    return datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")


def directory_name(name: object, key: str = "task_name") -> str:
    """`name` as one directory name inside logs/: not empty, no path separator, not `.` or `..`.

    The run directory, logs/<task_name>/runs/<time>, is made by Hydra before any trainlab code
    runs; this resolver stands in its path (conf/hydra/default.yaml), so a task_name that would
    leave logs/ (`../x`, `/tmp/x`) stops Hydra before it creates anything."""
    from trainlab.utils.config import ConfigError

    text = str(name)
    if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
        raise ConfigError(
            f"{key}={text!r} must be a plain name, one directory inside the log directory (logs/<{key}>/): "
            f"no '/', '\\', '.' or '..'. Use e.g. {key}=my_study; to write elsewhere set paths.log_dir."
        )
    return text


def register() -> None:
    if not OmegaConf.has_resolver("trainlab_timestamp"):
        OmegaConf.register_new_resolver("trainlab_timestamp", timestamp, use_cache=True)
    if not OmegaConf.has_resolver("trainlab_dir_name"):
        OmegaConf.register_new_resolver("trainlab_dir_name", directory_name)
