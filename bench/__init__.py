"""badged's measurements: scripts that print ratios and figures against stated goals."""
