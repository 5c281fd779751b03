"""Offline training: labelled window sets, time-ordered splits, fitting and calibration."""
