"""telecrm: a HIPAA-aware CRM integration and patient-engagement engine for telehealth platforms."""

__version__ = "0.1.0"
