"""Where a sweep's files live and how they are named: storage paths (local, NFS, s3://), a trial's identity,
the one reader of Tune's trial folders, and the driver's lock. Imports nothing else from orchestration."""
