"""Where compiled programs run: chip specs, emulators, simulators, cost models."""
