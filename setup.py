import sys

from setuptools import find_packages, setup

if sys.version_info < (3, 9) or sys.version_info >= (3, 13):
    sys.exit(
        "dialer needs CPython 3.9-3.12 on Linux x86_64: its SIP library "
        "(pjsua2-python==2.10.post6) ships wheels only for those."
    )

setup(
    name="dialer",
    version="0.1.0",
    description="Outbound campaign dialer with compliance guardrails",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0-or-later",
    python_requires=">=3.9,<3.13",
    packages=find_packages(include=["dialer", "dialer.*", "rules", "rules.*", "campaigns", "campaigns.*"]),
    py_modules=["cli"],
    package_data={"rules": ["defaults/*.json", "defaults/*.csv"], "dialer.sip": ["scenarios/*.xml"]},
    install_requires=[
        "twisted>=24.3",
        "txaio>=23.1",
        # 2.10.post6 is the last wheel built with 32 calls per process (2.15 wheels allow 4).
        "pjsua2-python==2.10.post6; platform_system == 'Linux' and platform_machine == 'x86_64'",
        "phonenumbers>=8.13.30",
        "pytz>=2024.1",
        "sqlite-utils>=3.36",
        "click>=8.1",
        "holidays>=0.50",
        "automat>=22.10",
        "pyroaring>=1.0",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "openpyxl>=3.1",
    ],
    extras_require={"test": ["pytest>=7.4", "pytest-timeout>=2.2", "hypothesis>=6.90"],
                    "bench": ["scipy>=1.11", "matplotlib>=3.7"]},
    entry_points={"console_scripts": ["dialer=cli:main"]},
)
