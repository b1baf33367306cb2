"""Facts about the machine, no timing: the NVML gateway (``nvml``) and the GPU inventory (``inventory``)."""
