"""Several cameras, one 3D pose: calibration (anipose's format) and triangulation."""
