"""Dashboard screens: fleet, verdicts, alerts (modes), evidence, help and modal pickers."""
