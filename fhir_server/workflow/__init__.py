"""Referral workflow: the transition table (data), the pure rules over it, the operations that
apply it, and the time-driven sweep (referral-model.md §2.5, §3.2)."""
