"""Database objects that read several packages' tables at once (the SQL side of the composition root).

Their migrations (`migrations/`) run after every package's own (`MIGRATION_PACKAGES` in infra/migrations.py), so
the tables they read exist when they are created. They are created with SQL-standard bodies (`BEGIN ATOMIC`):
PostgreSQL checks them at creation and records what they read, so a later migration that drops or changes a column
one of them reads fails loudly instead of breaking a request at run time; such a migration drops the object and a
new migration here creates it again."""
