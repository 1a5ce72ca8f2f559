import sys

from setuptools import find_packages, setup

# Only what CI runs is claimed: CPython 3.11 (Debian 12's python3) on Linux x86_64.
# 3.9 and 3.10 fail (dataclass(slots=True), other 3.10+ syntax); 3.12 is untested.
if sys.version_info[:2] != (3, 11):
    sys.exit(
        "dialer needs CPython 3.11 on Linux x86_64 (the version its tests run on; its SIP "
        "library pjsua2-python==2.10.post6 ships wheels for it)."
    )

setup(
    name="dialer",
    version="0.1.0",
    description="Outbound campaign dialer with compliance guardrails",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0-or-later",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["core", "core.*", "dialer", "dialer.*", "rules", "rules.*", "campaigns", "campaigns.*",
                                    "billing", "billing.*", "web", "web.*"]),
    py_modules=["cli"],
    package_data={"rules": ["defaults/*.json", "defaults/*.csv"], "dialer.sip": ["scenarios/*.xml"],
                  "web": ["templates/*.html", "static/*.js", "static/*.css", "static/vendor/*"]},
    install_requires=[
        # [tls]: pyOpenSSL and service_identity, for https webhooks (certificates checked against the host name)
        "twisted[tls]>=24.3",
        "txaio>=23.1",
        # the browser's live channel (web/live.py): autobahn's Twisted WebSocket server (txaio is its)
        "autobahn[twisted]>=24.4",
        # 2.10.post6 is the last wheel built with 32 calls per process (2.15 wheels allow 4).
        "pjsua2-python==2.10.post6; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "phonenumbers>=8.13.30",
        "pytz>=2024.1",
        # SQLite-only tooling (core.schema: `dialer db info`); the store's queries stay portable SQL
        "sqlite-utils>=3.36",
        "click>=8.1",
        "holidays>=0.50",
        "pyroaring>=1.0",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "openpyxl>=3.1",
        # the web application (web/): routing on twisted.web, templates, password hashes
        "klein>=24.8",
        "jinja2>=3.1",
        "argon2-cffi>=23.1",
    ],
    extras_require={"test": ["pytest>=7.4", "pytest-timeout>=2.2", "hypothesis>=6.90", "import-linter>=2.0",
                             "selenium>=4.20",
                             # the live channel's tests talk WebSocket (tests/test_web_live.py)
                             "websocket-client>=1.6",
                             # the JSON API checked against its OpenAPI document (tests/test_api_schemathesis.py)
                             "schemathesis>=4.30,<5"],
                    "bench": ["scipy>=1.11", "matplotlib>=3.7"]},
    entry_points={"console_scripts": ["dialer=cli:main"]},
)
