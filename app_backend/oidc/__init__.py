"""One login for departments: the OpenID Connect provider (Authlib's server behind a thin Litestar adapter)."""
