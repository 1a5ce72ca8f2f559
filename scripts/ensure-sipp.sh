# Sourced by demo.sh and test.sh: SIPp (Debian package sip-tester) is the embedded
# carrier and the agents' phones. Installs it with apt-get when it is missing.
if ! command -v sipp >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        SUDO="none"
    fi
    if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: sipp is missing and cannot be installed here (needs root or sudo, and apt-get); the SIP parts will be skipped" >&2
    else
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null
    fi
fi
