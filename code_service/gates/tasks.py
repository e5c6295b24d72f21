"""Nothing yet: the payments issue's fare job reads codes.taps."""
