"""One settlement channel for Alipay and WeChat Pay: orders, notifications, refunds, a double-entry ledger,
transit post-pay, settlement and reconciliation. Its module (`payments.module`) lists its routes, jobs and
migrations and starts its services (`payments.container.PaymentServices`)."""
