"""The machine's topology as a graph (facts from ``gpuprobe.system``, figures from ``gpuprobe.results``)."""
