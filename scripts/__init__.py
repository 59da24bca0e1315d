"""Development helpers; importable so tests and benchmarks use the same code as CI."""
