# Sourced by test.sh: Debian's Chromium and its chromedriver drive the browser tests
# (tests/test_web_browser.py, Selenium, headless). Installs them with apt-get when missing.
if ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromedriver ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        SUDO="none"
    fi
    if [ "$SUDO" = "none" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: chromium/chromium-driver are missing and cannot be installed here (needs root or sudo, and apt-get); the browser tests will be skipped" >&2
    else
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
fi
