"""The profile projection and lifecycle engine: events in per-patient order become profiles and stages."""
