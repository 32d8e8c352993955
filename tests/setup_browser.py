"""Make sure the system tools the browser and database tests need are installed: Debian's `chromium` and
`postgresql`. Run by `make test` before pytest:

    python -m tests.setup_browser

Idempotent and quick when both are present. Installs with apt-get when run as root; otherwise (or when apt fails)
it says so and exits 0 - the tests that need the missing tool then skip, each with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

CHROMIUM = "/usr/bin/chromium"
PACKAGES = {"chromium": lambda: os.path.exists(CHROMIUM) or shutil.which("chromium") is not None,
            "postgresql": lambda: bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))}


def _apt(args: list[str], timeout_s: int) -> tuple[bool, str]:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(["apt-get", *args], capture_output=True, text=True, timeout=timeout_s, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return done.returncode == 0, (done.stderr or done.stdout)[-800:]


def ensure(packages: dict = PACKAGES) -> dict[str, str]:
    """{package: what happened}; never raises."""
    missing = [name for name, present in packages.items() if not present()]
    report = {name: "present" for name in packages if name not in missing}
    if not missing:
        return report
    if shutil.which("apt-get") is None:
        return {**report, **{name: "missing; apt-get is not available, so its tests will skip" for name in missing}}
    if os.geteuid() != 0:
        return {**report, **{name: "missing; not root, so not installed (run as root: apt-get install -y "
                                   f"{name}); its tests will skip" for name in missing}}
    ok, out = _apt(["update", "-qq"], 600)
    if not ok:
        print(f"setup_browser: apt-get update failed, trying the install anyway: {out.strip()}", file=sys.stderr)
    for name in missing:
        ok, out = _apt(["install", "-y", "-qq", name], 1200)
        report[name] = "installed with apt-get" if ok and packages[name]() else \
            f"install failed ({out.strip().splitlines()[-1] if out.strip() else 'no output'}); its tests will skip"
    return report


def main() -> int:
    for name, outcome in ensure().items():
        print(f"setup_browser: {name}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
