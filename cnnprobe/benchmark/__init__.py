"""Timing steps: runners, statistics, sweeps, batch search, the FLOP/s peak, the regression gate."""
