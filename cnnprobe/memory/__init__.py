"""A step's memory: the tensor-level tracker, the host's memory, the prediction and the budget."""
