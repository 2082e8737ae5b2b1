"""Hardware in the loop: an emulated board as its own process, and the host's client for it."""
