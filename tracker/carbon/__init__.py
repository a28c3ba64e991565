"""Grid carbon intensity (tables, time series, live feeds), pricing energy in gCO2e, equivalents."""
