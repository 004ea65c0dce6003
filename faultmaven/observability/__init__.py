"""Logging, metrics export and health evaluation."""
