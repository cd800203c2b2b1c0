#!/bin/bash
# spark_tracking cluster init script.
#
# Databricks runs it as root on every node (driver and workers) before Spark starts. It
#   1. installs the spark_tracking wheel into the cluster Python with --no-deps, then only the
#      requirements the runtime lacks, under a constraints file that pins every distribution
#      already present (the runtime's pyspark and mlflow are never replaced, up- or downgraded);
#   2. writes the non-secret settings (SPARK_TRACKING_* cluster environment variables) to the
#      config file, for processes that do not inherit the cluster environment (web terminal, %sh);
#   3. checks the configuration a session will resolve to (the driver logs where runs go);
#   4. enables the startup hook (a .pth file), so every notebook session and every executor
#      Python worker of that interpreter configures itself.
#
# Secrets (AZURE_CLIENT_SECRET, ...) reach the cluster only as environment variables filled from
# {{secrets/<scope>/<key>}}; this script never reads, writes or prints them.
#
# A misconfiguration is logged with its fix and the cluster starts with tracking off, unless
# SPARK_TRACKING_STRICT=1, which makes the script fail (and so the cluster start).
# Safe to repeat: a second run on the same node changes nothing.
#
# Inputs (environment; Databricks defaults in brackets):
#   SPARK_TRACKING_WHEEL          the wheel: /Volumes/..., /Workspace/..., /dbfs/... or dbfs:/... (required)
#   SPARK_TRACKING_INIT_ROOT      prefix of every default path below, for tests [empty]
#   SPARK_TRACKING_INIT_PYTHON    cluster Python [/databricks/python3/bin/python]
#   SPARK_TRACKING_CONFIG_FILE    config file to write [/etc/spark_tracking/config.json]
#   SPARK_TRACKING_INIT_LOG       log file [/var/log/spark_tracking/init.log]
#   SPARK_TRACKING_INIT_STATE     folder for the record of the installed wheel [/var/lib/spark_tracking]
#   SPARK_TRACKING_INIT_PIP_ARGS  extra pip arguments for missing requirements, e.g. an index [empty]
#   SPARK_TRACKING_INIT_PACKAGES  optional packages to install under the runtime's constraints, e.g.
#                                 azureml-mlflow ('spark-tracking install --azureml-mlflow') [empty]
#   SPARK_TRACKING_STRICT         1: fail the node on a misconfiguration [0]
#   DB_IS_DRIVER                  set by Databricks: TRUE on the driver
set -euo pipefail
umask 022

# Standard access mode on DBR 19+ passes only the predefined DB_* variables to init scripts, so
# 'spark-tracking install' writes the cluster's non-secret settings into the copy it uploads,
# here (a variable that does reach the script wins):
BAKED=0  # spark-tracking install: no settings baked into this copy

ROOT="${SPARK_TRACKING_INIT_ROOT:-}"
PYTHON="${SPARK_TRACKING_INIT_PYTHON:-$ROOT/databricks/python3/bin/python}"
WHEEL="${SPARK_TRACKING_WHEEL:-}"
CONFIG_FILE="${SPARK_TRACKING_CONFIG_FILE:-$ROOT/etc/spark_tracking/config.json}"
LOG_FILE="${SPARK_TRACKING_INIT_LOG:-$ROOT/var/log/spark_tracking/init.log}"
STATE_DIR="${SPARK_TRACKING_INIT_STATE:-$ROOT/var/lib/spark_tracking}"
read -r -a PIP_EXTRA <<< "${SPARK_TRACKING_INIT_PIP_ARGS:-}"
read -r -a PACKAGES <<< "${SPARK_TRACKING_INIT_PACKAGES:-}"
ROLE="worker"
if [[ "${DB_IS_DRIVER:-}" == "TRUE" ]]; then ROLE="driver"; fi
case "$(printf '%s' "${SPARK_TRACKING_STRICT:-0}" | tr '[:upper:]' '[:lower:]')" in
  1|true|yes|on) STRICT=1 ;;
  *) STRICT=0 ;;
esac

# The hook must not configure the helper processes below (pip, the checks): remember the
# user's value for the checks, then turn the hook off for this script's own processes.
export SPARK_TRACKING_INIT_USER_DISABLED="${SPARK_TRACKING_DISABLED:-}"
export SPARK_TRACKING_DISABLED=1
export SPARK_TRACKING_CONFIG_FILE="$CONFIG_FILE"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

mkdir -p "$(dirname "$LOG_FILE")"

log() {
  local line
  line="$(date -u +%Y-%m-%dT%H:%M:%SZ) spark-tracking-init [$ROLE] $*"
  printf '%s\n' "$line" >> "$LOG_FILE"
  printf '%s\n' "$line"
}

# A misconfiguration: say what and how to fix it; tracking stays off unless strict.
misconfigured() {
  log "ERROR: $*"
  if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import spark_tracking' > /dev/null 2>&1; then
    hook disable >> "$LOG_FILE" 2>&1 || true
  fi
  if [[ "$STRICT" == 1 ]]; then
    log "SPARK_TRACKING_STRICT is set: failing this node's start"
    exit 1
  fi
  log "tracking is OFF on this node; the cluster starts anyway (set SPARK_TRACKING_STRICT=1 to fail instead)"
  exit 0
}

on_unexpected_error() {
  trap - ERR  # no second round if reporting fails too
  misconfigured "unexpected failure at line $1 (exit code $2); details above in $LOG_FILE"
}
trap 'on_unexpected_error "$LINENO" "$?"' ERR

node_helper() {
  "$PYTHON" -m spark_tracking.install.node "$@"
}

# The hook module only (not the whole CLI, whose other subcommands this script does not need).
hook() {
  "$PYTHON" -c 'import sys, spark_tracking.hook as h
path, changed = getattr(h, sys.argv[1])()
print(f"hook {sys.argv[1]}d: {path}" + ("" if changed else " (no change)"))' "$1"
}

log "start (node ${HOSTNAME:-unknown}, cluster ${DB_CLUSTER_ID:-unknown}, python $PYTHON)"

# A copy that 'spark-tracking install' did not upload carries no settings: it has only what the
# cluster's variables give it, and in standard access mode on DBR 19+ they give it nothing.
if [[ "$BAKED" != 1 ]]; then
  UNBAKED_MISSING=""
  if [[ -z "$WHEEL" ]]; then UNBAKED_MISSING="SPARK_TRACKING_WHEEL (the wheel to install)"; fi
  if [[ -z "${SPARK_TRACKING_AML_WORKSPACE_ID:-}${SPARK_TRACKING_TRACKING_URI:-}${SPARK_TRACKING_DATABRICKS_RESOURCE_ID:-}${SPARK_TRACKING_WORKSPACE_NAME:-}" ]]; then
    UNBAKED_MISSING="${UNBAKED_MISSING:+$UNBAKED_MISSING; }a store (SPARK_TRACKING_AML_WORKSPACE_ID, SPARK_TRACKING_TRACKING_URI or SPARK_TRACKING_DATABRICKS_RESOURCE_ID: sessions then follow the Databricks workspace's AML link, if any)"
  fi
  log "this copy of the init script has no settings baked in (it was not uploaded by 'spark-tracking install'), so it has only the cluster's environment variables, which standard access mode on DBR 19+ does not pass to init scripts; missing here: ${UNBAKED_MISSING:-nothing}. Fix: upload a baked copy with 'spark-tracking install --cluster-id <id>' (all-purpose clusters) or 'spark-tracking install --print-policy --target <folder>' (job clusters, cluster policies)"
fi

# -- 1. the wheel ---------------------------------------------------------------------------
if [[ ! -x "$PYTHON" ]]; then
  misconfigured "cluster Python $PYTHON not found. Fix: use a Databricks Runtime with /databricks/python3, or set SPARK_TRACKING_INIT_PYTHON."
fi
if [[ -z "$WHEEL" ]]; then
  misconfigured "SPARK_TRACKING_WHEEL is not set. Fix: run 'spark-tracking install --cluster-id <id> --target <folder>', or set the cluster environment variable SPARK_TRACKING_WHEEL to the uploaded wheel (e.g. /Volumes/<catalog>/<schema>/<volume>/spark_tracking-<version>-py3-none-any.whl)."
fi
if [[ "$WHEEL" == dbfs:/* ]]; then WHEEL="/dbfs/${WHEEL#dbfs:/}"; fi
if [[ ! -f "$WHEEL" ]]; then
  misconfigured "wheel SPARK_TRACKING_WHEEL=$WHEEL is not readable on this node. Fix: upload it again with 'spark-tracking install', and check that the cluster may read that Volume or workspace folder."
fi
WHEEL_NAME="$(basename "$WHEEL")"
VERSION="$(printf '%s' "$WHEEL_NAME" | cut -d- -f2)"
SHA256="$(sha256sum "$WHEEL" | cut -d' ' -f1)"
MARKER="$STATE_DIR/installed-wheel"
WANTED="$WHEEL_NAME $SHA256"
INSTALLED_VERSION="$("$PYTHON" -c 'import importlib.metadata as m
try:
    print(m.version("spark-tracking"))
except m.PackageNotFoundError:
    pass' 2>> "$LOG_FILE")"

if [[ "$INSTALLED_VERSION" == "$VERSION" && -f "$MARKER" && "$(cat "$MARKER")" == "$WANTED" ]]; then
  log "spark-tracking $VERSION already installed from $WHEEL_NAME (sha256 $SHA256): no change"
else
  log "installing spark-tracking $VERSION from $WHEEL (sha256 $SHA256) without dependencies"
  if ! "$PYTHON" -m pip install --no-deps --force-reinstall --no-index "$WHEEL" >> "$LOG_FILE" 2>&1; then
    misconfigured "pip could not install $WHEEL into $PYTHON (pip's output is above in $LOG_FILE). Fix: rebuild the wheel and run 'spark-tracking install' again."
  fi
  mkdir -p "$STATE_DIR"
  printf '%s\n' "$WANTED" > "$MARKER.tmp"
  mv "$MARKER.tmp" "$MARKER"
  log "installed spark-tracking $VERSION"
fi

# Only what the runtime lacks, with everything present pinned by a constraints file.
MISSING_TEXT="$(node_helper missing-requirements 2>> "$LOG_FILE")"
MISSING=()
if [[ -n "$MISSING_TEXT" ]]; then mapfile -t MISSING <<< "$MISSING_TEXT"; fi
if (( ${#MISSING[@]} > 0 )); then
  CONSTRAINTS="$STATE_DIR/runtime-constraints.txt"
  node_helper constraints > "$CONSTRAINTS.tmp" 2>> "$LOG_FILE"
  mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"
  log "installing requirements the runtime lacks: ${MISSING[*]} (everything present pinned by $CONSTRAINTS)"
  if ! "$PYTHON" -m pip install --constraint "$CONSTRAINTS" "${PIP_EXTRA[@]}" "${MISSING[@]}" >> "$LOG_FILE" 2>&1; then
    misconfigured "pip could not install ${MISSING[*]} without changing what the runtime provides (pip's output is above in $LOG_FILE). Fix: pick a runtime that ships them, or point SPARK_TRACKING_INIT_PIP_ARGS at an index that has them."
  fi
else
  log "every requirement is provided by the runtime: nothing else installed"
fi

# Optional packages (azureml-mlflow): resolved by pip under the same constraints, so nothing the
# runtime provides moves (azureml-mlflow pins mlflow-skinny <= 3.15.0; as a free cluster library
# it would put that skinny over the runtime's mlflow). What the runtime already provides under
# another name (its full mlflow for the mlflow-skinny asked for, same version) is not written
# over. A package that cannot be installed so is left out with the reason; tracking stays on.
if (( ${#PACKAGES[@]} > 0 )); then
  WANTED_TEXT="$(node_helper unsatisfied "${PACKAGES[@]}" 2>> "$LOG_FILE")"
  if [[ -z "$WANTED_TEXT" ]]; then
    log "optional packages already installed: ${PACKAGES[*]}"
  else
    mapfile -t WANTED_PACKAGES <<< "$WANTED_TEXT"
    CONSTRAINTS="$STATE_DIR/runtime-constraints.txt"
    mkdir -p "$STATE_DIR"
    node_helper constraints > "$CONSTRAINTS.tmp" 2>> "$LOG_FILE"
    mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"
    REPORT="$STATE_DIR/packages-report.json"
    log "installing ${WANTED_PACKAGES[*]} under the runtime's constraints ($CONSTRAINTS)"
    if "$PYTHON" -m pip install --dry-run --quiet --report "$REPORT" --constraint "$CONSTRAINTS" "${PIP_EXTRA[@]}" "${WANTED_PACKAGES[@]}" >> "$LOG_FILE" 2>&1 \
      && RESOLVED_TEXT="$(node_helper to-install "$REPORT" 2>> "$LOG_FILE")"; then
      RESOLVED=()
      if [[ -n "$RESOLVED_TEXT" ]]; then mapfile -t RESOLVED <<< "$RESOLVED_TEXT"; fi
      if (( ${#RESOLVED[@]} == 0 )) || "$PYTHON" -m pip install --no-deps --constraint "$CONSTRAINTS" "${PIP_EXTRA[@]}" "${RESOLVED[@]}" >> "$LOG_FILE" 2>&1; then
        log "installed ${RESOLVED[*]:-nothing new} (for ${WANTED_PACKAGES[*]})"
      else
        log "ERROR: pip could not install ${RESOLVED[*]} (pip's output is above in $LOG_FILE); ${WANTED_PACKAGES[*]} left out, tracking stays on without them"
      fi
    else
      log "ERROR: ${WANTED_PACKAGES[*]} cannot be installed without changing what the runtime provides (pip's output is above in $LOG_FILE); left out, tracking stays on without them. Fix: pick a version that accepts this runtime's MLflow (e.g. SPARK_TRACKING_INIT_PACKAGES='azureml-mlflow==<version>'), or a runtime whose MLflow it accepts"
    fi
  fi
fi

# -- 2. the config file (non-secret settings only) ------------------------------------------
if ! CONFIG_RESULT="$(node_helper write-config "$CONFIG_FILE" 2>> "$LOG_FILE")"; then
  misconfigured "the settings in the cluster environment could not be written to $CONFIG_FILE: ${CONFIG_RESULT:-see $LOG_FILE}"
fi
log "$CONFIG_RESULT"

# -- 3. check the configuration (every node, so that tracking is on or off cluster-wide) -------
if ! CHECK="$(node_helper check 2>> "$LOG_FILE")"; then
  misconfigured "$CHECK"
fi
# where runs go is the driver's business: workers hand their points to the driver
if [[ "$ROLE" == "driver" ]]; then
  while IFS= read -r line; do log "$line"; done <<< "$CHECK"
fi

# -- 4. the startup hook: notebook sessions (driver) and Python workers (every node) ---------
log "$(hook enable 2>> "$LOG_FILE")"

log "done: spark-tracking $VERSION ready on this $ROLE"
