# Sourced by test.sh: Debian's Chromium and its chromedriver drive the browser tests
# (tests/test_web_browser.py, Selenium, headless). Installs them with apt-get when missing.
. "$(dirname "${BASH_SOURCE[0]}")/ensure-apt.sh"
if ! command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/chromedriver ]; then
    ensure_apt "the browser tests" chromium chromium-driver
fi
