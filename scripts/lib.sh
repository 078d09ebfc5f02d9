# scripts/lib.sh: shell helpers shared by Plank's scripts (sourced, not run).

# Run a command as the postgres user: PostgreSQL refuses to run as root.
as_pg() {
    if [ "$(id -un)" = postgres ]; then
        "$@"
    elif [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        sudo -u postgres -- "$@"
    fi
}

# Run a command as root (directly when already root).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}
