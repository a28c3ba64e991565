"""DRAM meters for hosts whose RAPL has no DRAM domain: power from the installed memory size."""
