"""Ledger shapes live in service.py (LedgerCheck); postings are (account, fen) pairs."""
