# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts that source this
# PostgreSQL for the history store's tests and benchmark (history.Postgres),
# sourced after lib.sh (by up.sh and down.sh). Never run on its own.
#
#   postgres/         the cluster (initdb), owned by the postgres OS user, which
#                     the server runs as (it refuses root)
#   run/postgres/     its unix socket; run/postgres.pid its pid
#   logs/postgres.log its log
#
# It listens on 127.0.0.1:$POSTGRES_PORT only (15432, moved like the stack's
# other ports when another process holds it; a running server keeps the port
# it has, read from its postmaster.pid rather than from .stack/ports), with
# trust authentication for connections from there, and has a database
# "buildsvc". postgres_up sets DATABASE_URL to it; up.sh writes that into
# .stack/env.

PG_BIN=/usr/lib/postgresql/15/bin
PG_OS_USER=postgres
PG_DATA="$STACK/postgres"
PG_SOCK_DIR="$RUN/postgres"
PG_PID="$RUN/postgres.pid"
PG_LOG="$LOGS/postgres.log"
PG_DB=buildsvc
# POSTGRES_PORT as the environment set it when this file was sourced.
PG_PORT_ENV="${POSTGRES_PORT:-}"

# pg_as_owner CMD...: run CMD as the postgres OS user (we are root).
pg_as_owner() {
	runuser -u "$PG_OS_USER" -- "$@"
}

# pg_sync_pid: copy the running server's pid from its postmaster.pid into
# $PG_PID (pid_alive and choose_port read a file of one pid); remove $PG_PID
# when no server runs.
pg_sync_pid() {
	local pid
	pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
	mkdir -p "$RUN"
	if [[ $pid =~ ^[0-9]+$ ]]; then
		printf '%s\n' "$pid" >"$PG_PID"
		pid_alive "$PG_PID" "$PG_BIN/postgres" && return 0
	fi
	rm -f "$PG_PID"
	return 1
}

# postgres_port: POSTGRES_PORT from the environment, else the running
# server's, else 15432; moved to a free one by choose_port unless it came
# from the environment.
postgres_port() {
	local v
	if [[ -n $PG_PORT_ENV ]]; then
		[[ $PG_PORT_ENV =~ ^[0-9]+$ ]] || die "POSTGRES_PORT=$PG_PORT_ENV is not a port"
		POSTGRES_PORT="$PG_PORT_ENV"
		PORTS_FROM_ENV+=" POSTGRES_PORT"
	elif pg_sync_pid && v="$(sed -n 4p "$PG_DATA/postmaster.pid")" && [[ $v =~ ^[0-9]+$ ]]; then
		POSTGRES_PORT="$v"
	else
		POSTGRES_PORT=15432
	fi
	choose_port POSTGRES_PORT "$PG_PID" "$PG_BIN/postgres"
}

# postgres_up: start the stack's PostgreSQL (idempotent: a running one is
# left alone), create its database, set DATABASE_URL.
postgres_up() {
	local port
	ensure_apt postgresql
	[[ -x $PG_BIN/postgres ]] || die "$PG_BIN/postgres is missing (Debian's postgresql-15)"
	[[ $(id -u) -eq 0 ]] || die "postgres_up runs the server as the $PG_OS_USER user: run it as root"
	id "$PG_OS_USER" >/dev/null 2>&1 || die "there is no $PG_OS_USER user (the postgresql package makes it)"
	mkdir -p "$STACK" "$RUN" "$LOGS"
	runuser -u "$PG_OS_USER" -- test -x "$STACK" ||
		die "the $PG_OS_USER user cannot reach $STACK: every directory above it must be searchable (chmod o+x)"
	postgres_port
	if [[ ! -f $PG_DATA/PG_VERSION ]]; then
		log "postgres: initdb $PG_DATA"
		rm -rf "$PG_DATA"
		install -d -o "$PG_OS_USER" -g "$PG_OS_USER" -m 700 "$PG_DATA"
		pg_as_owner "$PG_BIN/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --locale=C >>"$PG_LOG" 2>&1 ||
			{ tail -n 20 "$PG_LOG" >&2; die "initdb failed (log: $PG_LOG)"; }
	fi
	install -d -o "$PG_OS_USER" -g "$PG_OS_USER" -m 700 "$PG_SOCK_DIR"
	touch "$PG_LOG"
	chown "$PG_OS_USER:" "$PG_LOG"
	if pg_sync_pid; then
		port="$(sed -n 4p "$PG_DATA/postmaster.pid")"
		[[ $port == "$POSTGRES_PORT" ]] ||
			die "postgres runs on port $port, not POSTGRES_PORT=$POSTGRES_PORT; run postgres_down (scripts/down.sh) first"
	else
		log "postgres: starting on 127.0.0.1:$POSTGRES_PORT"
		pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 \
			-o "-p $POSTGRES_PORT -k $PG_SOCK_DIR -h 127.0.0.1" start >/dev/null ||
			{ tail -n 30 "$PG_LOG" >&2; die "postgres failed to start (log: $PG_LOG)"; }
		pg_sync_pid || die "postgres started but $PG_DATA/postmaster.pid names no live postgres"
		log "started postgres (pid $(cat "$PG_PID")), log $PG_LOG"
	fi
	local psql=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
	if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'")" != 1 ]]; then
		log "postgres: creating database $PG_DB"
		"${psql[@]}" -c "CREATE DATABASE $PG_DB" || die "could not create database $PG_DB"
	fi
	DATABASE_URL="postgres://postgres@127.0.0.1:$POSTGRES_PORT/$PG_DB?sslmode=disable"
}

# postgres_down: stop the stack's PostgreSQL if it runs (its data is kept).
postgres_down() {
	if pg_sync_pid; then
		log "stopping postgres (pid $(cat "$PG_PID"))"
		pg_as_owner "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null ||
			warn "pg_ctl stop failed (log: $PG_LOG)"
	fi
	rm -f "$PG_PID"
}
