-- code_service's questions about a resident, answered in one SQL function (issue 5: a code display costs at most
-- one round trip to PostgreSQL; docs/decisions/0002-one-statement-code-display.md). The contract (name,
-- arguments, columns, semantics) is declared in code_service/codes/repository.py (RESIDENT_FACTS); that
-- repository calls it by that name inside its own statement (the subject, the department statuses), so that
-- statement never names identity's or payments' tables. First created as the composition's migration app_backend.composition/0001;
-- existing databases keep that one (the migrator records it under this name).
--
-- Why a function here rather than a query string handed over by identity's service: SQL stays in SQL (migrations
-- and repositories), PostgreSQL checks the body when it is created and records which columns it reads (a payments
-- or identity migration that changes one of them fails until this is recreated, instead of breaking displays at
-- run time), and a STABLE single-SELECT SQL function is inlined by the planner, so it costs what the hand-written
-- join would. code_service is listed after identity and payments in the module list, so their tables exist.
--
-- The answers must stay those of the ports they replace on the display path (tests/code_service/codes/test_display_round_trips.py
-- checks them against the ports):
--   active       ResidentDirectory.resident_active: the resident exists and its status is 'active'
--   name_enc     the stored (AES-GCM) name, NULL before real-name; masked in Python (ResidentDirectory.mask_name)
--   person_key   ResidentDirectory.person_key_of: the keyed hash of the ID number, NULL before real-name
--   may_ride     TransitService.may_ride (payments' RideEligibility and TransitRepository.eligibility):
--   ride_reason    no ACTIVE withholding agreement: 'no-agreement'; else blocked by operations: 'blocked';
--                  else an uncleared failed deduction: 'in-debt'; else may ride ('').
-- Exactly one row for any uuid (an unknown resident is inactive, with NULLs).
CREATE SCHEMA IF NOT EXISTS code_ports;

CREATE OR REPLACE FUNCTION code_ports.resident_facts(resident uuid)
    RETURNS TABLE (active boolean, name_enc bytea, person_key bytea, may_ride boolean, ride_reason text)
    LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(r.status = 'active', false), r.name_enc, r.id_number_hash, e.reason = '', e.reason
    FROM (SELECT CASE
                     WHEN NOT EXISTS (SELECT 1 FROM payments.transit_agreements a
                                      WHERE a.resident_id = resident_facts.resident AND a.status = 'active')
                         THEN 'no-agreement'
                     WHEN EXISTS (SELECT 1 FROM payments.transit_blocks b
                                  WHERE b.resident_id = resident_facts.resident)
                         THEN 'blocked'
                     WHEN EXISTS (SELECT 1 FROM payments.transit_deductions d
                                  WHERE d.resident_id = resident_facts.resident AND d.status = 'failed'
                                    AND d.cleared_at IS NULL)
                         THEN 'in-debt'
                     ELSE ''
                 END AS reason
          OFFSET 0) AS e  -- keeps the subquery whole: its CASE is read twice and should run once
    LEFT JOIN identity.residents r ON r.id = resident_facts.resident;
END;
