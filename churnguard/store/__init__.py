"""The stores the live loop keeps: raw events and customers (prediction log: churnguard.prediction_log)."""
