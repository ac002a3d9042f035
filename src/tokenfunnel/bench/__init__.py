"""Measuring compression: analytic FLOPs, trustworthy timings, sweeps."""
