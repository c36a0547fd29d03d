#!/bin/sh
# One-shot Temporal schema set-up (the `temporal-schema` compose service, temporalio/admin-tools image):
# creates the `temporal` and `temporal_visibility` databases on the PostgreSQL service when missing, then
# brings both schemas to the version this admin-tools image ships. Every step is idempotent, so it runs on
# every `docker compose up` and is also how a Temporal upgrade migrates its schema (docs/deploy.md).
# The password comes from SQL_PASSWORD in the environment, never the command line.
set -eu

: "${SQL_HOST:?set SQL_HOST}"
: "${SQL_USER:?set SQL_USER}"
: "${SQL_PASSWORD:?set SQL_PASSWORD}"
SQL_PORT="${SQL_PORT:-5432}"
PLUGIN="${SQL_PLUGIN:-postgres12}"
SCHEMA_DIR="${TEMPORAL_SCHEMA_DIR:-/etc/temporal/schema/postgresql/v12}"

attempt=1
until nc -z -w 5 "$SQL_HOST" "$SQL_PORT"; do
    if [ "$attempt" -ge 30 ]; then
        echo "PostgreSQL at $SQL_HOST:$SQL_PORT did not answer" >&2
        exit 1
    fi
    attempt=$((attempt + 1))
    sleep 2
done

sql_tool() {
    temporal-sql-tool --plugin "$PLUGIN" --ep "$SQL_HOST" -p "$SQL_PORT" -u "$SQL_USER" "$@"
}

for pair in "${TEMPORAL_DBNAME:-temporal}:temporal" "${TEMPORAL_VISIBILITY_DBNAME:-temporal_visibility}:visibility"; do
    db="${pair%%:*}"
    schema="${pair#*:}"
    echo "temporal-schema: database $db ($schema schema)"
    sql_tool --db "$db" create
    sql_tool --db "$db" setup-schema -v 0.0
    sql_tool --db "$db" update-schema -d "$SCHEMA_DIR/$schema/versioned"
done
echo "temporal-schema: done"
