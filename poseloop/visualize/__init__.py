"""Seeing results: pose tables read back, labeled videos and trajectory plots."""
