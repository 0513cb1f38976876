"""Bytes in and out: the stream, the prefilter, worker processes, input files, signals."""
