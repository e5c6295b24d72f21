-- Orders for venue bookings (app_backend/bookings, docs/decisions/0030-venue-booking.md): purpose `venue_booking`,
-- paid to the venue's organiser.
ALTER TABLE payments.orders DROP CONSTRAINT orders_purpose_check;
ALTER TABLE payments.orders ADD CONSTRAINT orders_purpose_check
    CHECK (purpose IN ('utility_bill', 'non_tax_fee', 'ticket', 'venue_booking', 'transit_fare', 'other'));
