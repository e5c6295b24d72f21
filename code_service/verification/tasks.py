"""Scan records are flushed by ScanRecorder's own task in each server process."""
