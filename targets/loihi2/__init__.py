"""Loihi 2: the native bit-accurate emulator."""

from targets.loihi2.emulator import resolve_device, run

__all__ = ["resolve_device", "run"]
