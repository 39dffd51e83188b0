#!/usr/bin/env bash
# Start a throwaway PostgreSQL server (Debian's `postgresql` package) on a Unix socket in a fresh temp directory,
# as a non-root user (PostgreSQL refuses to run as root), and print its URL. Stop it with:
#   pg_ctl -D <dir>/data stop        (the dir is the URL's host)
set -euo pipefail
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "no PostgreSQL server binary (apt-get install postgresql)" >&2
    exit 3
fi
dir=$(mktemp -d /tmp/oneshot-pg.XXXXXX)
chmod 755 "$dir"
as=()
if [ "$(id -u)" = 0 ]; then
    user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    chown "$user" "$dir"
    as=(runuser -u "$user" --)
fi
"${as[@]}" "$bindir/initdb" -D "$dir/data" -U oneshot --auth=trust >/dev/null
"${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-k $dir -c listen_addresses='' -c fsync=off -c full_page_writes=off" start >/dev/null
"${as[@]}" "$bindir/createdb" -h "$dir" -U oneshot oneshot
echo "postgresql://oneshot@/oneshot?host=$dir"
