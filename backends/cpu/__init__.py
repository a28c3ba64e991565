"""CPU meters: RAPL package and DRAM counters (powercap files or pyRAPL), and the TDP estimate."""
