r"""Check, in a headless browser, that the built site's mathematics renders offline.

For each page given (default: a set of math-heavy pages of ``docs/_build/html``) this opens
the page from disk in headless Chromium, with every host name unresolvable
(``--host-resolver-rules``) so that nothing can come from the network, lets MathJax run,
and reads back the DOM (``--dump-dom``). A page passes when

* it has math (at least one ``class="math …"`` element in the built HTML),
* MathJax typeset every one of them: the DOM holds one ``<mjx-container>`` per math
  element, with no ``<mjx-merror>`` (a TeX error),
* no TeX is left as text outside code (``$$`` or ``$…\command…$`` that the Markdown
  parser did not take as math), and
* the page loads no script, stylesheet or image from an http(s) address.

``--self-test`` also runs the check on a copy of one page whose local MathJax has been
removed, and fails unless the check rejects it: a check that cannot fail is no check.

    python docs/check_math.py [--site docs/_build/html] [--self-test] [PAGE.html ...]

Exit status 0 if every page passes, 1 otherwise. Needs ``chromium`` (Debian package
``chromium``) or the executable named by ``$CHROMIUM``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PAGES = [
    "docs/theory.html",
    "docs/golden-format.html",
    "notebooks/02_ksvd_lagrangian_to_svd.html",
    "derivations/README.html",
]
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--allow-file-access-from-files",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no host name resolves: offline by construction
    "--virtual-time-budget=20000",
    "--dump-dom",
]
MATH_ELEMENT = re.compile(r'<(?:span|div) class="math[ "]')
HIDDEN = re.compile(r"<(script|style|pre|code|mjx-container)\b.*?</\1>", re.S)
RAW_TEX = re.compile(r"\$\$|\$[^$<>\n]{0,200}?\\[A-Za-z]+[^$<>\n]{0,200}?\$")
REMOTE = re.compile(r'<(?:script|img)[^>]*\ssrc="https?://|<link[^>]*\shref="https?://[^"]*"[^>]*>')


def browser() -> str:
    exe = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise SystemExit(
            "check_math: no chromium found (apt-get install chromium, or set $CHROMIUM)"
        )
    return exe


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, from a fresh headless Chromium profile."""
    with tempfile.TemporaryDirectory(prefix="check-math-profile-") as profile:
        proc = subprocess.run(
            [browser(), *FLAGS, f"--user-data-dir={profile}", page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def check_page(page: Path) -> list[str]:
    """Problems with one built page (an empty list if its math rendered)."""
    if not page.is_file():
        return [f"{page}: no such page"]
    html = page.read_text(encoding="utf-8")
    expected = len(MATH_ELEMENT.findall(html))
    problems = []
    if expected == 0:
        problems.append(f"{page}: no math elements in the built page")
    remote = [m.group(0)[:100] for m in REMOTE.finditer(html)]
    if remote:
        problems.append(f"{page}: loads from the network: {remote[:3]}")
    dom = rendered_dom(page)
    typeset = dom.count("<mjx-container")
    errors = dom.count("<mjx-merror")
    if typeset < expected:
        problems.append(f"{page}: {typeset} of {expected} math elements typeset by MathJax")
    if errors:
        problems.append(f"{page}: {errors} TeX errors (mjx-merror)")
    raw = RAW_TEX.findall(HIDDEN.sub("", dom))
    if raw:
        problems.append(f"{page}: TeX left as text, not typeset: {raw[:3]}")
    if not problems:
        print(f"ok   {page}: {typeset} math elements typeset, {expected} expected, 0 TeX errors")
    return problems


def self_test(site: Path, page: str) -> list[str]:
    """The check must reject the same page once its local MathJax is gone."""
    with tempfile.TemporaryDirectory(prefix="check-math-selftest-") as tmp:
        copy = Path(tmp) / "site"
        shutil.copytree(site, copy, ignore=shutil.ignore_patterns("mathjax"))
        problems = check_page(copy / page)
    if any("typeset by MathJax" in p for p in problems):
        print(f"ok   self-test: without MathJax the check fails ({problems[0].split(': ', 1)[1]})")
        return []
    return ["self-test: the check passed a page whose MathJax was removed"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", nargs="*", help="pages relative to --site (default: a fixed set)")
    ap.add_argument("--site", type=Path, default=ROOT / "docs" / "_build" / "html")
    ap.add_argument("--self-test", action="store_true", help="also check that the check can fail")
    args = ap.parse_args(argv)
    problems = []
    for page in args.pages or DEFAULT_PAGES:
        problems += check_page(args.site / page)
    if args.self_test:
        problems += self_test(args.site, (args.pages or DEFAULT_PAGES)[0])
    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
