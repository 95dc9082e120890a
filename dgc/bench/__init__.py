"""Many runs: series, sweeps, benchmarks, the ablation and the tables over them."""
