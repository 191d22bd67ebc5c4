"""Training (needs the `train` extra: torch + torchvision): data, network, loop, evaluation."""
