"""Integration report and API readiness analyzer: what a platform's API offers a CRM."""
