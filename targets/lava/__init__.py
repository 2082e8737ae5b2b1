"""Intel's Lava (lava-nc 0.10.0) as a target, run in its own Python 3.10 environment."""
