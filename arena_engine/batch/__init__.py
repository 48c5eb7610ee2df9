"""Provider batch APIs: requests sent as batch input files at about half the price (docs/batch.md)."""
