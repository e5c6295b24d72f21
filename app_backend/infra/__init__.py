"""Infrastructure shared by the whole server: database, Redis, crypto, errors, logging, metrics."""
