"""Names to modules: the registry, inputs, building on meta or a device, heads, freezing, weights."""
