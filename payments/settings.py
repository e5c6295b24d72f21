"""How payments is run: fees, timeouts, where channels notify us."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaymentSettings:
    notify_base_url: str = "http://127.0.0.1:8000"
    order_ttl_seconds: int = 15 * 60
    # Dev and tests deliver payee events to local receivers; production only to https on public addresses.
    allow_local_webhooks: bool = False
    # Platform fee per purpose, in basis points of the amount. Government fees and utility bills carry none.
    fee_bp: dict[str, int] = field(
        default_factory=lambda: {
            "utility_bill": 0,
            "non_tax_fee": 0,
            "ticket": 60,
            "venue_booking": 60,
            "transit_fare": 0,
            "other": 60,
        }
    )
    # What each channel keeps per payment, in parts per million (0.6% = 6000), rounded half up to the fen;
    # reconciliation checks every bill line's fee against it. A channel absent here has its fees unchecked.
    channel_fee_ppm: dict[str, int] = field(default_factory=lambda: {"alipay": 6000, "wechat": 6000})
    # Reconciliation: an item one side has this close to midnight waits a day in the scratch pool.
    reconcile_midnight_window_s: int = 300
