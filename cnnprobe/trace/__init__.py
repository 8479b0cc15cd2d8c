"""The one dispatch pass: module calls, shapes and FLOPs, with the per-operator formulas and shape rules."""
