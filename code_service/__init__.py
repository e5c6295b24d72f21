"""The one code: keys, issuing, status feeds, verification, gates. Never imports app_backend: the composition root
hands it a database pool, Redis, a secret box and directories through `CodeServices.create` and Litestar DI.

`code_service.verifier` ships to gate devices alone and must import nothing outside the standard library and
`cryptography`; `code_service.holder` is the phone side, under the same rule."""
