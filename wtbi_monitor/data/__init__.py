"""Data in and out: the WTBI format reader/writer and the synthetic farm generator."""
