"""Loihi 2: the native bit-accurate emulator."""

from targets.loihi2.emulator import run

__all__ = ["run"]
