"""Optional parts built on jobqueue's public layers (nothing below imports them)."""
