#!/usr/bin/env bash
# PostgreSQL and Redis for alqa's production profile, on this machine only.
#
#   bash scripts/services.sh install      apt-get install postgresql + redis-server when missing
#                                          (as root, or with password-less sudo; else says what to run)
#   bash scripts/services.sh start DIR    a throwaway PostgreSQL cluster and a redis-server, both on
#                                          127.0.0.1 and a free port each; writes DIR/services.env
#   bash scripts/services.sh stop DIR     stops both and deletes the cluster's data
#   bash scripts/services.sh check        exit 0 when both servers' binaries are installed
#
# Orthanc (a real PACS, with its DICOMweb plugin) for the DICOM-SEG round trip; `install` installs it too:
#   bash scripts/services.sh check-orthanc        exit 0 when Orthanc and its DICOMweb plugin are installed
#   bash scripts/services.sh start-orthanc DIR    a throwaway Orthanc on 127.0.0.1 and a free port (storage in DIR);
#                                                  writes DIR/orthanc.env (ALQA_ORTHANC_URL, ALQA_ORTHANC_DICOMWEB)
#   bash scripts/services.sh stop-orthanc DIR     stops it and deletes its storage
#
# Headless Chromium and its WebDriver (Debian chromium + chromium-driver) for the alqa serve web
# worklist's test; `install` installs them too:
#   bash scripts/services.sh check-chromium       exit 0 when chromium and chromedriver are installed
#
# DIR/services.env holds the variables deploy/production/{dagster,celery}.yaml read:
#   DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USER DAGSTER_PG_PASSWORD DAGSTER_PG_DB
#   ALQA_CELERY_BROKER ALQA_CELERY_BACKEND
# Export them before starting Dagster: set -a; . DIR/services.env; set +a
#
# The cluster is for development and tests: fsync off, nothing kept after stop. PostgreSQL
# refuses to run as root, so as root the cluster runs as the `postgres` OS user (created by
# the Debian package), in its own temporary folder that user can reach. Redis saves nothing
# (--save '', no AOF). Neither server listens beyond 127.0.0.1.
set -euo pipefail

die() { echo "services.sh: $*" >&2; exit 1; }

pg_bindir() {
  # Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<major>/bin.
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$newest" ] && [ -x "$newest/initdb" ]; then echo "$newest"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
  return 1
}

have_servers() { pg_bindir >/dev/null && command -v redis-server >/dev/null 2>&1; }

ORTHANC_PLUGIN_DIR=/usr/share/orthanc/plugins
orthanc_bin() { command -v Orthanc 2>/dev/null || { [ -x /usr/sbin/Orthanc ] && echo /usr/sbin/Orthanc; }; }
have_orthanc() { orthanc_bin >/dev/null && [ -e "$ORTHANC_PLUGIN_DIR/libOrthancDicomWeb.so" ]; }
have_chromium() { { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && command -v chromedriver >/dev/null 2>&1; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

cmd_check() {
  if have_servers; then
    echo "services.sh: postgresql ($(pg_bindir)) and redis-server ($(command -v redis-server)) are installed"
  else
    echo "services.sh: missing:$(pg_bindir >/dev/null || echo ' postgresql')$(command -v redis-server >/dev/null 2>&1 || echo ' redis-server')"
    return 1
  fi
}

cmd_install() {
  local -a packages=()
  pg_bindir >/dev/null || packages+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
  have_orthanc || packages+=(orthanc orthanc-dicomweb)
  have_chromium || packages+=(chromium chromium-driver)
  if [ ${#packages[@]} -eq 0 ]; then cmd_check; cmd_check_orthanc; cmd_check_chromium; return 0; fi
  local -a as_root=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      as_root=(sudo -n)
    else
      echo "services.sh: ${packages[*]} are needed for the integration tests; as root run:" >&2
      echo "  apt-get install -y --no-install-recommends ${packages[*]}" >&2
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install ${packages[*]} with your package manager"
  local t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  # a fresh machine may have no package lists, or stale ones
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  have_servers || die "apt-get finished but the postgresql/redis-server binaries are still missing"
  have_orthanc || die "apt-get finished but Orthanc or its DICOMweb plugin is still missing"
  have_chromium || die "apt-get finished but chromium or chromedriver is still missing"
  # on a systemd host the orthanc package starts its own service (ports 8042/4242); ours take free ports
  echo "services.sh: installed ${packages[*]} in $((SECONDS - t0)) s"
}

cmd_check_orthanc() {
  if have_orthanc; then
    echo "services.sh: Orthanc ($(orthanc_bin)) and its DICOMweb plugin are installed"
  else
    echo "services.sh: missing:$(orthanc_bin >/dev/null || echo ' orthanc')$([ -e "$ORTHANC_PLUGIN_DIR/libOrthancDicomWeb.so" ] || echo ' orthanc-dicomweb')"
    return 1
  fi
}

cmd_check_chromium() {
  if have_chromium; then
    echo "services.sh: chromium and chromedriver ($(command -v chromedriver)) are installed"
  else
    echo "services.sh: missing: chromium and/or chromium-driver"
    return 1
  fi
}

cmd_start_orthanc() {
  local dir=${1:?usage: services.sh start-orthanc DIR}
  have_orthanc || die "orthanc/orthanc-dicomweb not installed (bash scripts/services.sh install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/orthanc.env" ] && die "$dir/orthanc.env exists: stop that Orthanc first (services.sh stop-orthanc $dir)"
  local port pid ok=""
  port=$(free_port)
  mkdir -p "$dir/orthanc"
  # Our own single config file (never /etc/orthanc): HTTP only, no DICOM listener, loopback clients
  # only (Orthanc 1.10 has no bind address; RemoteAccessAllowed=false refuses every other client),
  # no auth. DicomWeb.Host keeps the port in the RetrieveURLs of QIDO-RS answers.
  printf '%s\n' \
    '{' \
    '  "Name": "alqa-test",' \
    "  \"StorageDirectory\": \"$dir/orthanc/storage\"," \
    "  \"IndexDirectory\": \"$dir/orthanc/index\"," \
    "  \"HttpPort\": $port," \
    '  "RemoteAccessAllowed": false,' \
    '  "AuthenticationEnabled": false,' \
    '  "DicomServerEnabled": false,' \
    "  \"Plugins\": [\"$ORTHANC_PLUGIN_DIR/libOrthancDicomWeb.so\"]," \
    "  \"DicomWeb\": {\"Enable\": true, \"Root\": \"/dicom-web/\", \"EnableWado\": false, \"Host\": \"127.0.0.1:$port\"}," \
    '  "SaveJobs": false,' \
    '  "OrthancExplorerEnabled": false,' \
    '  "WebDavEnabled": false,' \
    '  "StableAge": 1' \
    '}' >"$dir/orthanc/orthanc.json"
  setsid "$(orthanc_bin)" "$dir/orthanc/orthanc.json" >"$dir/orthanc.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/orthanc.pid"
  for _ in $(seq 300); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/system', timeout=1)" 2>/dev/null; then
      ok=1
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/orthanc.pid"
    tail -n 30 "$dir/orthanc.log" >&2
    die "Orthanc did not answer on 127.0.0.1:$port"
  fi
  printf 'ALQA_ORTHANC_URL=http://127.0.0.1:%s\nALQA_ORTHANC_DICOMWEB=http://127.0.0.1:%s/dicom-web\n' "$port" "$port" >"$dir/orthanc.env.tmp"
  mv "$dir/orthanc.env.tmp" "$dir/orthanc.env"
  echo "services.sh: Orthanc with DICOMweb on 127.0.0.1:$port; env in $dir/orthanc.env"
}

cmd_stop_orthanc() {
  local dir=${1:?usage: services.sh stop-orthanc DIR}
  local pid
  if [ ! -f "$dir/orthanc.pid" ]; then
    rm -f "$dir/orthanc.env"
    echo "services.sh: no Orthanc started in $dir"
    return 0
  fi
  pid=$(cat "$dir/orthanc.pid")
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true   # SIGTERM: Orthanc shuts down cleanly
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -rf "$dir/orthanc"
  rm -f "$dir/orthanc.pid" "$dir/orthanc.env"
  echo "services.sh: stopped Orthanc of $dir"
}

# The OS user the cluster runs as, and a prefix that runs a command as that user.
pg_user() {
  if [ "$(id -u)" -ne 0 ]; then id -un; return; fi
  if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

as_pg() {
  local user=$1; shift
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

cmd_start() {
  local dir=${1:?usage: services.sh start DIR}
  have_servers || die "postgresql/redis-server not installed (bash scripts/services.sh install)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -e "$dir/services.env" ] && die "$dir/services.env exists: stop those services first (services.sh stop $dir)"
  local bin user pgroot pg_port redis_port password
  bin=$(pg_bindir)
  user=$(pg_user)
  if [ "$(id -u)" -eq 0 ]; then
    # the cluster's user must reach its folder; DIR may be private to root
    pgroot=$(mktemp -d /tmp/alqa-pg.XXXXXX)
    chown "$user" "$pgroot"
  else
    pgroot="$dir/postgres"
    mkdir -p "$pgroot"
  fi
  password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  printf '%s\n' "$password" > "$pgroot/pwfile"
  [ "$(id -u)" -eq 0 ] && chown "$user" "$pgroot/pwfile"
  chmod 600 "$pgroot/pwfile"
  as_pg "$user" "$bin/initdb" -D "$pgroot/data" -U alqa --pwfile="$pgroot/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-sync --no-instructions >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  rm -f "$pgroot/pwfile"
  pg_port=$(free_port)
  as_pg "$user" "$bin/pg_ctl" -D "$pgroot/data" -l "$pgroot/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $pg_port -k $pgroot -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$pgroot/postgres.log" >&2; die "postgres did not start"; }
  as_pg "$user" "$bin/createdb" -h "$pgroot" -p "$pg_port" -U alqa alqa_dagster

  redis_port=$(free_port)
  redis-server --bind 127.0.0.1 --port "$redis_port" --protected-mode yes --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir" >/dev/null
  for _ in $(seq 50); do [ -s "$dir/redis.pid" ] && break; sleep 0.1; done
  [ -s "$dir/redis.pid" ] || die "redis-server did not start (see $dir/redis.log)"

  cat >"$dir/services.env.tmp" <<EOF
DAGSTER_PG_HOST=127.0.0.1
DAGSTER_PG_PORT=$pg_port
DAGSTER_PG_USER=alqa
DAGSTER_PG_PASSWORD=$password
DAGSTER_PG_DB=alqa_dagster
ALQA_CELERY_BROKER=redis://127.0.0.1:$redis_port/0
ALQA_CELERY_BACKEND=redis://127.0.0.1:$redis_port/1
ALQA_SERVICES_PGROOT=$pgroot
ALQA_SERVICES_PGUSER=$user
EOF
  mv "$dir/services.env.tmp" "$dir/services.env"
  echo "services.sh: postgres on 127.0.0.1:$pg_port (db alqa_dagster, user alqa), redis on 127.0.0.1:$redis_port; env in $dir/services.env"
}

cmd_stop() {
  local dir=${1:?usage: services.sh stop DIR}
  [ -f "$dir/services.env" ] || { echo "services.sh: nothing started in $dir"; return 0; }
  local pgroot user bin
  pgroot=$(sed -n 's/^ALQA_SERVICES_PGROOT=//p' "$dir/services.env")
  user=$(sed -n 's/^ALQA_SERVICES_PGUSER=//p' "$dir/services.env")
  if [ -f "$dir/redis.pid" ]; then
    kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    rm -f "$dir/redis.pid"
  fi
  if [ -n "$pgroot" ] && [ -d "$pgroot/data" ]; then
    bin=$(pg_bindir)
    as_pg "$user" "$bin/pg_ctl" -D "$pgroot/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  case "$pgroot" in
    /tmp/alqa-pg.*|"$dir"/postgres) rm -rf "$pgroot" ;;
  esac
  rm -f "$dir/services.env"
  echo "services.sh: stopped postgres and redis of $dir"
}

case "${1:-}" in
  install) cmd_install ;;
  check) cmd_check ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  check-orthanc) cmd_check_orthanc ;;
  check-chromium) cmd_check_chromium ;;
  start-orthanc) shift; cmd_start_orthanc "$@" ;;
  stop-orthanc) shift; cmd_stop_orthanc "$@" ;;
  *) sed -n '2,30p' "$0" >&2; exit 2 ;;
esac
