"""The gate-side verifier: pure Python and `cryptography`, no server dependencies.

from code_service.verifier import OfflineVerifier, DenyList
gate = OfflineVerifier(jwks)              # from GET /.well-known/jwks.json, refreshed at least daily
gate.update_scene_keys(document)          # from GET /api/v1/gates/scene-keys, refreshed at least daily
gate.deny_list.apply_document(jws, gate.key_for_kid)   # from GET /api/v1/gates/deny-list?since=VERSION
verdict = gate.verify(scanned_text, "transit")          # verdict.allowed, verdict.reason
"""

from code_service.verifier.denylist import DenyList
from code_service.verifier.offline import OfflineVerifier, ReplayCache, SceneKeys, Verdict

__all__ = ["DenyList", "OfflineVerifier", "ReplayCache", "SceneKeys", "Verdict"]
