"""The compliance rules engine: pure core (numbers, ruleset, engine) apart from
the store-facing service layer (service, audit, registry, screening)."""
