"""Layer 3: collectors turn request bodies into frames (envelopes + rejects) for the log."""
