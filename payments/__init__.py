"""One settlement channel for Alipay and WeChat Pay: orders, notifications, refunds, a double-entry ledger,
transit post-pay, settlement and reconciliation. Never imports app_backend: the composition root hands it a
database pool, Redis, settings and channel adapters."""
