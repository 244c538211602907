"""Host operators the quantiser inserts (on the allow-list of :mod:`xbcompiler.hostops`)."""

from ..hostops import requantize

__all__ = ["requantize"]
