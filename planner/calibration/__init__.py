"""Calibration: measured kernel tables per (GPU, engine) and the validation status of each answer."""
