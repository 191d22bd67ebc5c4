"""Serial output devices, their line protocol, a pseudo-terminal emulator, and firmware."""
