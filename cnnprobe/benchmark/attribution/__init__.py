"""`profile`: a step's time attributed to modules, forward and backward, joined with counts and the roofline."""
