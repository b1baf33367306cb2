"""gpuprobe: measure a GPU server's interconnect and pick the vLLM layout to deploy.

Public API:
    load_results(path)  -> Results     read a file written by ``gpuprobe probe -o FILE``
    save_results(results, path)        write one atomically
    run_probes(options) -> Results     measure (needs a GPU for the CUDA probes)
"""

__version__ = "0.1.0"

from gpuprobe.results import Measurement, Results, load_results, save_results

__all__ = ["Measurement", "Results", "__version__", "load_results", "save_results"]
