"""Offline evaluation: both protocols, window and event metrics, reports and plots."""
