"""Plain (non-Lightning) subcommands of ``recapture`` that must start fast (no heavy imports)."""
