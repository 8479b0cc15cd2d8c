"""What a device can do and how long a step takes on it: the spec table, operator classes, efficiency curves
and their calibration, and the time model that predicts a step before it runs."""
