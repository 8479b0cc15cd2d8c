"""Everything that opens a `.pth`: safe loading, the pickle rewriter, state_dict formats and fit."""
