"""Offline analysis of many videos: one task per video, here or on a Dask cluster
(``poseloop analyze``), with outputs written whole or not at all, a rerun resuming where
the last stopped, and results as DeepLabCut tables and NWB (ndx-pose) files."""
