"""One module per read-only command and its record: summary, flops, trainable, compare, checkpoint."""
