"""Framework integrations for coyote_mw, one module per framework."""
