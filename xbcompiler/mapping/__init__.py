"""The mapping family (SPEC 2): cost model, slice-width search, block-Toeplitz placement, replication."""
