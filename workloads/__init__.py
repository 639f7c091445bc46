"""Training tasks indexed by model size and data size; `workloads.api` is the contract."""
