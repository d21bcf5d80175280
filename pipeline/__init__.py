"""stallwatch around its transforms: the CLI, flags and config, the launcher and graph
(launch.py, graph.py), I/O (io/), results (results/), the collector and the generator."""
