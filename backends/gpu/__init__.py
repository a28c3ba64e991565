"""GPU meters: NVIDIA boards through NVML, and a GPU estimated to draw a stated power."""
