"""Built-in target descriptions, published through the ``xbcompiler.targets`` entry point."""

from pathlib import Path


def catalog() -> dict[str, Path]:
    """Every ``*.toml`` beside this file, by file stem (e.g. ``isaac-like``)."""
    return {p.stem: p for p in sorted(Path(__file__).parent.glob("*.toml"))}
