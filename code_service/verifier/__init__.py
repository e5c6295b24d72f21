"""The gate-side verifier: pure Python and `cryptography`, no server dependencies.

from code_service.verifier import OfflineVerifier, DenyList
gate = OfflineVerifier(jwks)              # from GET /.well-known/jwks.json, refreshed at least daily
gate.update_scene_keys(document)          # from GET /api/v1/gates/scene-keys, refreshed at least daily
gate.deny_list.apply_document(jws, gate.key_for_kid)   # from GET /api/v1/gates/deny-list?since=VERSION
verdict = gate.verify(scanned_text, "transit")          # verdict.allowed, verdict.reason
gate.update_attendees(jws)                 # a venue's gate: GET /api/v1/gates/attendees?occasion=UUID
verdict = gate.verify(scanned_text, "event", entrance="东门")   # verdict.section, verdict.seat
"""

from code_service.verifier.attendees import AttendeeList
from code_service.verifier.denylist import DenyList
from code_service.verifier.offline import OfflineVerifier, ReplayCache, SceneKeys, Verdict

__all__ = ["AttendeeList", "DenyList", "OfflineVerifier", "ReplayCache", "SceneKeys", "Verdict"]
