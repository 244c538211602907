"""The mapping family (background §2): cost model, slice-width search, block-Toeplitz placement, replication."""
