"""The one definition of a training step: its configuration, loss, optimizer and devices."""
