-- Taps are taken over by the fare side (payments) through the composition root; this marks the ones it has taken.
ALTER TABLE codes.taps ADD COLUMN fare_taken_at timestamptz;
CREATE INDEX taps_fare_untaken_idx ON codes.taps (received_at) WHERE fare_taken_at IS NULL;

-- Transit eligibility now comes from payments (agreements, debts, blocks) through the TransitEligibility port.
DROP TABLE codes.dev_transit_eligibility;
