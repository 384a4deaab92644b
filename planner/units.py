"""Unit constants, converted once.

Papers mix GB (1e9 bytes) and GiB (2**30 bytes); every quantity in planner carries its unit
in its name (`memory_gib`, `hbm_bandwidth_gbps` meaning GB/s). Memory that a plan needs is
rounded up and memory that a card offers is rounded down (see `planner.encode`).
"""

BYTES_PER_GB: float = 1e9
BYTES_PER_GIB: float = 2.0**30
BYTES_PER_MIB: float = 2.0**20
FLOPS_PER_TFLOP: float = 1e12
SECONDS_PER_HOUR: float = 3600.0
HOURS_PER_YEAR: float = 8760.0
HOURS_PER_WEEK: float = 168.0

