"""Reconciliation has no payee-facing HTTP surface: operations read the reports through the admin endpoint
(GET /api/v1/admin/reconciliation?date=YYYY-MM-DD, in app_backend) and run days with `tzt reconcile --date`."""
