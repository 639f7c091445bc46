#!/usr/bin/env bash
# The sweep's MLflow tracking server on a `ray up` head node, in a Docker container of its own beside
# Ray's. Ray's container is started with --rm, so a `ray up` that recreates it would take a server
# inside it down with it; this container is Docker's to restart (--restart unless-stopped, reboots
# included) and holds no state: runs live in PostgreSQL, artifacts in object storage. It listens on
# 127.0.0.1 only: the sweep's driver runs on the head, and you reach the UI through SSH.
#
# Run it on the head's host, outside Ray's container (cluster/README.md, step 4):
#   ray exec --run-env host cluster/aws-gpu.yaml \
#     'bash /tmp/ray_tmp_mount/scalesweep-gpu/home/ray/scalesweep-cluster/mlflow/serve.sh \
#        postgresql://mlflow@YOUR-DB-HOST:5432/mlflow s3://scalesweep-YOUR-TEAM/mlflow'
# (ray up keeps a copy of the cluster/ file mount at that path on the host.)
#
# Arguments: DB_URI ARTIFACTS [PORT]
#   DB_URI     postgresql://USER@HOST:PORT/DB, without a password. The script asks for the password
#              once, on the terminal, and keeps it in ~/.scalesweep/mlflow.env (mode 600) on the head,
#              where the server reads it as libpq's PGPASSWORD: never on a command line, so never in a
#              shell history or a process list.
#   ARTIFACTS  s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (the head's instance role or service account
#              gives access); on-prem also an absolute directory on the head, which outlives the server.
#   PORT       default 5000.
# Run again with the same arguments, it leaves a healthy server alone; with others, it replaces it.
set -euo pipefail

usage() { echo "usage: serve.sh postgresql://USER@HOST:PORT/DB s3://BUCKET/PREFIX|gs://BUCKET/PREFIX|/ABS/DIR [PORT]" >&2; exit 2; }
[ $# -ge 2 ] && [ $# -le 3 ] || usage
db_uri=$1 artifacts=$2 port=${3:-5000}

case "$db_uri" in
  postgresql://*|postgresql+psycopg2://*) ;;
  *) echo "DB_URI must be a PostgreSQL URI (SQLite cannot take a sweep's concurrent writers), got ${db_uri%%://*}://..." >&2; exit 2 ;;
esac
# The driver by name: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which the image lacks.
db_uri="postgresql+psycopg2://${db_uri#*://}"
authority=${db_uri#*://}; authority=${authority%%/*}
case "$authority" in
  *:*@*) echo "DB_URI holds a password; give postgresql://USER@HOST:PORT/DB and type the password when asked" >&2; exit 2 ;;
  *@*) ;;
  *) echo "DB_URI names no user: postgresql://USER@HOST:PORT/DB" >&2; exit 2 ;;
esac
case "$artifacts" in
  s3://?*|gs://?*|/?*) ;;
  *) echo "ARTIFACTS must be s3://..., gs://... or an absolute directory, got '$artifacts'" >&2; exit 2 ;;
esac
case "$port" in ''|*[!0-9]*) echo "PORT must be a number, got '$port'" >&2; exit 2 ;; esac
command -v docker >/dev/null || { echo "no docker on this host: run this on the head's host (ray exec --run-env host)" >&2; exit 1; }

image=ghcr.io/mlflow/mlflow:v3.17.2   # the MLflow the project pins
name=scalesweep-mlflow
state="$HOME/.scalesweep"
env_file="$state/mlflow.env"
mkdir -p "$state" && chmod 700 "$state"

password=""
if [ -f "$env_file" ]; then
  password=$(sed -n 's/^PGPASSWORD=//p' "$env_file")
fi
if [ -z "$password" ]; then
  read -rsp "PostgreSQL password for ${authority%%@*} at ${authority#*@}: " password </dev/tty
  echo >&2
fi
(
  umask 077
  printf 'MLFLOW_BACKEND_STORE_URI=%s\nMLFLOW_ARTIFACTS_DESTINATION=%s\nPGPASSWORD=%s\n' "$db_uri" "$artifacts" "$password" >"$env_file"
)
config=$( (cat "$env_file"; echo "$port $image") | sha256sum | cut -c1-16)

healthy() {
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${port}/health" 2>/dev/null \
    || python3 -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "http://127.0.0.1:${port}/health" 2>/dev/null
}

if [ "$(docker inspect -f '{{ index .Config.Labels "scalesweep.config" }}' "$name" 2>/dev/null || true)" = "$config" ] && healthy; then
  echo "MLflow already serving on 127.0.0.1:${port} (docker logs $name)"
  exit 0
fi

mounts=()
case "$artifacts" in /*) mkdir -p "$artifacts"; mounts=(-v "$artifacts:$artifacts") ;; esac
docker rm -f "$name" >/dev/null 2>&1 || true
# The image lacks the PostgreSQL driver and the object-store clients; pip installs them once per
# container (a restart keeps them). MLflow reads both URIs from the environment, libpq the password.
# Its GenAI job runner (and Huey consumer) stays off: two processes per server that sweeps never use.
docker run -d --name "$name" --restart unless-stopped --network host --env-file "$env_file" \
  -e MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  --label "scalesweep.config=$config" "${mounts[@]}" "$image" sh -c \
  "pip install --no-cache-dir -q psycopg2-binary==2.9.13 'boto3>=1.34' 'google-cloud-storage>=2.10' \
   && exec mlflow server --host 127.0.0.1 --port $port --workers 4" >/dev/null

for _ in $(seq 1 90); do
  if healthy; then
    echo "MLflow serving on 127.0.0.1:${port}, artifacts in $artifacts (docker logs $name)"
    exit 0
  fi
  sleep 2
done
echo "MLflow did not become healthy in 3 minutes; see: docker logs $name" >&2
exit 1
