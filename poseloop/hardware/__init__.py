"""Serial output devices, their line protocol, a pseudo-terminal emulator, and firmware;
``actuators.make_actuators`` makes the engine's devices from config."""
