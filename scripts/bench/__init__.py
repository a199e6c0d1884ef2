"""GPU measurement tools: benchmarks and profiles against torch, apart from the engine they
measure. None of it is imported by the product; their smoke tests carry the `bench` marker."""
