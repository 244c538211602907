"""An example xbcompiler plugin: the ``crossbar-budget`` pass and the ``my-chip`` target (docs/passes.md)."""

from pathlib import Path


def catalog() -> dict[str, Path]:
    """The targets this package publishes (entry point group ``xbcompiler.targets``), by name."""
    return {"my-chip": Path(__file__).with_name("my-chip.toml")}
