"""The one code: keys, issuing, status feeds, verification, gates. Its module (`code_service.module`) lists its
routes and starts its services (`code_service.container.CodeServices`); it uses identity's and enterprises'
public services for facts about holders.

`code_service.verifier` ships to gate devices alone and must import nothing outside the standard library and
`cryptography`; `code_service.holder` is the phone side, under the same rule."""
