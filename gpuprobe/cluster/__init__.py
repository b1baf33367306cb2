"""gpuprobe over several nodes: the launcher read from the environment (``launch.py``), the node-to-node links
(``links.py``) and the run that merges every node into one results file (``run.py``)."""
