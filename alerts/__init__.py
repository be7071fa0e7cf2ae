"""Alerts to account owners: raised from the daily pass's snapshot, routed by configs/alerts.yaml,
delivered through an outbox in the event store's database, and followed to an outcome.

Imports churnguard/ only (see DESIGN.md); the command line and the service wire it in.
"""
