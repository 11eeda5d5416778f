"""What a sweep file says: every key's schema, the loader and its checks, search spaces, what fits a node,
and the sweep record (digests, sweep.json). Imports only `store`."""
