"""`bench` across processes and nodes: the rank worker and the launcher."""
