# Sourced by demo.sh and test.sh: SIPp (Debian package sip-tester) is the embedded
# carrier and the agents' phones. Installs it with apt-get when it is missing.
. "$(dirname "${BASH_SOURCE[0]}")/ensure-apt.sh"
if ! command -v sipp >/dev/null 2>&1; then
    ensure_apt "the SIP parts" sip-tester
fi
