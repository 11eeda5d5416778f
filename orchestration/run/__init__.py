"""Running a sweep's trials: preflight, the cluster, the task's features, the Tune experiment, the trial, the
training loop and its sessions. Imports `config` and `store`, never `results`."""
