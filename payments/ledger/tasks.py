"""The nightly invariant check can run as `tzt ledger check` from a scheduler."""
