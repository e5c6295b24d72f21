"""The ledger has no public HTTP surface; operations use `tzt ledger check`."""
