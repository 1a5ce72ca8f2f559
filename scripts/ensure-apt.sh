# Sourced by the ensure-*.sh scripts: ensure_apt WHAT PACKAGE... installs Debian
# packages with apt-get (as root, or through sudo); without either it warns that
# WHAT will be skipped.
ensure_apt() {
    local what=$1 sudo
    shift
    if [ "$(id -u)" -eq 0 ]; then
        sudo=""
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        sudo="none"
    fi
    if [ "$sudo" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: $* missing and cannot be installed here (needs root or sudo, and apt-get); $what will be skipped" >&2
    else
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    fi
}
