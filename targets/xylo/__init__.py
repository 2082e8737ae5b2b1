"""SynSense Xylo Audio 2 (SYNS61201) and Xylo IMU (SYNS63300): program, lowering passes, design
rules, emulator and costs, one for both; each chip is its spec file.

A Xylo holds one network: up to 16 input channels into up to 1000 hidden
neurons whose connections among themselves form one recurrent matrix, read
by up to 8 output neurons. ``targets.xylo.lowering`` turns a layered float
graph into that shape; ``targets.xylo.emulator`` runs it bit for bit as
SynSense's xylosim does.
"""

from targets.xylo.emulator import run

__all__ = ["run"]
