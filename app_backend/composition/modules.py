"""Every domain of the platform, in the order of their migrations. Adding a domain is a package with a module
object (app_backend/kernel/module.py) and one line here; the app factory, the job worker and the migrator loop
over this list."""

from __future__ import annotations

from app_backend.audit.module import module as audit
from app_backend.bookings.module import module as bookings
from app_backend.enterprises.module import module as enterprises
from app_backend.events.module import module as events
from app_backend.home.module import module as home
from app_backend.identity.module import module as identity
from app_backend.kernel.module import DomainModule
from app_backend.notifications.module import module as notifications
from app_backend.oidc.module import module as oidc
from app_backend.organisations.module import module as organisations
from app_backend.tickets.module import module as tickets
from app_backend.tiles.module import module as tiles
from code_service.module import module as codes
from mini_programs.module import module as mini_programs
from payments.module import module as payments

MODULES: list[DomainModule] = [
    audit,
    identity,
    enterprises,
    organisations,
    payments,
    codes,  # after payments: its one-statement display function reads payments' transit tables
    mini_programs,
    oidc,
    notifications,  # after mini_programs: its grants belong to linked identities
    tiles,  # after organisations (its tiles' owners) and oidc (the one-login client a tile logs residents into)
    home,  # after tiles, identity and notifications: its one cold statement reads their tables
    events,  # after organisations: its rows belong to the organising department
    bookings,  # after events (its venues), payments (its orders) and notifications (its messages)
    tickets,  # after events (the sessions it sells), payments (its orders) and notifications (its messages)
]
