# What every shell on a cluster node needs, sourced from the first line of that node's ~/.bashrc (both
# cluster files put it there in setup_commands). Ray runs every command over SSH in such a shell: `ray start`,
# `ray exec`, `ray attach`, and the `ray stop` that `ray down` sends; so all of them see the same three things.

# 1. The project's Python environment first on PATH (cluster-onprem.yaml installs it in ~/emosweep-venv; the
#    AWS image has Ray on PATH already). Without it `ray down` finds no `ray` and leaves Ray running.
if [ -d "$HOME/emosweep-venv/bin" ]; then
  export PATH="$HOME/emosweep-venv/bin:$PATH"
fi

# 2. Token authentication: the node's ~/.ray/auth_token (copied by `ray up`) is used by `ray start` and by
#    every driver started here.
export RAY_AUTH_MODE=token

# 3. Variables every Ray process on the node must inherit, e.g. a bucket's AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
#    AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION: write them in cluster.env next to this file on your machine
#    (see cluster.env.example; git ignores it) and `ray up` copies it to every node with the checkout. They are
#    set before `ray start`, so trials and extraction actors see them too.
if [ -f "$HOME/emosweep/cluster.env" ]; then
  set -a
  . "$HOME/emosweep/cluster.env"
  set +a
fi
