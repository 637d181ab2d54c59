"""The pure model: field catalog, events, lifecycle rules, funnels. No I/O here."""
