"""The resource a user writes and what it holds: the schema (the one source of the CRD) assembled from
its parts (sources, tasks, goals, tuning), the status, the Job contract, parsing and the wire base."""
