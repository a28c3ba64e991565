"""Whole-node meters and the node's own per-component meters (HPE Cray EX, NVIDIA Grace/GH200)."""
