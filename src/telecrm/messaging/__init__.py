"""Messaging: templates, PHI lint, consent, send rules, dispatch to SendGrid / Twilio, tracking."""
