#!/usr/bin/env bash
# Start the sweep's MLflow tracking server on a ray up cluster's head node, bound to 127.0.0.1
# (the sweep's driver runs on the head; you reach the UI through an SSH tunnel). Run it with
#   ray exec cluster/aws-gpu.yaml 'MLFLOW_BACKEND_STORE_URI=postgresql://USER:PASSWORD@HOST:5432/mlflow \
#       MLFLOW_ARTIFACTS_DESTINATION=s3://BUCKET/mlflow bash ~/scalesweep-cluster/mlflow/serve.sh'
#
# MLFLOW_BACKEND_STORE_URI (required): a PostgreSQL database that outlives the cluster (RDS, Cloud SQL,
#   your own server). SQLite is not an option here: every trial of a sweep writes concurrently.
# MLFLOW_ARTIFACTS_DESTINATION (optional): s3://..., gs://... or a shared file system path; default
#   ~/mlflow-artifacts on the head, which `ray down` deletes.
# MLFLOW_PORT (optional): default 5000.
set -euo pipefail

: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI to a postgresql://USER:PASSWORD@HOST:5432/DB URI}"
case "$MLFLOW_BACKEND_STORE_URI" in
  postgresql://*|postgresql+*://*) ;;
  *) echo "MLFLOW_BACKEND_STORE_URI must be a PostgreSQL URI, got ${MLFLOW_BACKEND_STORE_URI%%://*}://..." >&2; exit 2 ;;
esac
export MLFLOW_ARTIFACTS_DESTINATION="${MLFLOW_ARTIFACTS_DESTINATION:-$HOME/mlflow-artifacts}"
port="${MLFLOW_PORT:-5000}"

healthy() {  # the Ray images have python, not necessarily curl
  python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" \
    "http://127.0.0.1:${port}/health" >/dev/null 2>&1
}

if healthy; then
  echo "MLflow already serving on 127.0.0.1:${port}"
  exit 0
fi

# mlflow reads MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION itself: no password on the command line.
nohup mlflow server --host 127.0.0.1 --port "$port" --workers 4 >"$HOME/mlflow-server.log" 2>&1 &
echo "$!" >"$HOME/mlflow-server.pid"

for _ in $(seq 1 60); do
  if healthy; then
    echo "MLflow serving on 127.0.0.1:${port} (pid $(cat "$HOME/mlflow-server.pid"), log ~/mlflow-server.log)"
    exit 0
  fi
  sleep 2
done
echo "MLflow did not become healthy; see ~/mlflow-server.log" >&2
exit 1
