"""Test-only: Python imports this at start-up in every process whose PYTHONPATH names this folder (conftest.py
puts it there, so the sweeps tests start and their Ray trial processes all have it). It does nothing unless a
test asks for a fault through the environment (emosweep_faults.py)."""
import emosweep_faults

emosweep_faults.install()
