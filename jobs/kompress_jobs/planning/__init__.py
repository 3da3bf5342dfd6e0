"""Before any work: the pass chain planned and checked (plan.py), and what `kompress validate` checks of
local files (preflight.py) and of GitOps folders (gitops.py)."""
