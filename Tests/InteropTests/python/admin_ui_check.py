"""Drives the admin web UI (/admin) in a real headless Chromium through Selenium.

Usage: admin_ui_check.py --base http://127.0.0.1:PORT --artifacts DIR --prefix P
                         --ok GID --failed GID --stuck GID --stuck-error TEXT [--token TOKEN]

Checks, in order (each failure ends the run with exit status 1 and says which check):
  - with --token: the page's files load without a token, the API answers 401, the page asks for
    a token, and after entering it the list loads;
  - the list shows the three gids; the status filter and the gid prefix filter narrow it;
  - the failed saga's page shows its attempts and, in the sequence diagram, its compensations;
  - the stuck transaction's "why is this not finished" box shows a next retry, the retry count
    and its last error, whose markup (like the gid's) renders as text, never as elements;
  - Force stop on the stuck transaction (confirm accepted) answers SUCCESS.
Screenshots (PNG) of each page go to DIR. Prints one JSON line {"ok": true, "screenshots": [...]}.
Exit status 2: chromium or chromedriver is missing.
"""
import argparse
import datetime
import json
import os
import shutil
import sys
import urllib.parse

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 30  # seconds for any one condition; a loaded CI machine can be slow


class CheckFailed(Exception):
    pass


def find_binary(env, names):
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def make_driver():
    chromium = find_binary("CHROMIUM", ["chromium", "chromium-browser", "google-chrome"])
    driver_path = find_binary("CHROMEDRIVER", ["chromedriver"])
    if not chromium or not driver_path:
        print(f"missing: chromium={chromium} chromedriver={driver_path}; run tools/setup", file=sys.stderr)
        sys.exit(2)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions", "--lang=en-US"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


class Run:
    def __init__(self, driver, args):
        self.driver = driver
        self.args = args
        self.screenshots = []
        self.step = "start"

    def wait(self, what, condition, timeout=WAIT):
        self.step = what
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(condition)
        except TimeoutException:
            raise CheckFailed(f"timed out after {timeout} s waiting for: {what}")

    def check(self, condition, message):
        if not condition:
            raise CheckFailed(message)

    def screenshot(self, name):
        path = os.path.join(self.args.artifacts, name + ".png")
        # The whole page, not just the window: resize to the document's height first.
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, max(800, min(int(height) + 40, 4000)))
        self.driver.save_screenshot(path)
        self.driver.set_window_size(1400, 1000)
        self.screenshots.append(path)

    def viewport_screenshot(self, name, width, height):
        """What a user sees first (smaller than the whole page; docs/admin-ui.png is one)."""
        path = os.path.join(self.args.artifacts, name + ".png")
        self.driver.set_window_size(width, height)
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(path)
        self.driver.set_window_size(1400, 1000)
        self.screenshots.append(path)

    def element_screenshot(self, name, selector):
        path = os.path.join(self.args.artifacts, name + ".png")
        element = self.driver.find_element(By.CSS_SELECTOR, selector)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", element)
        element.screenshot(path)
        self.screenshots.append(path)

    def open(self, fragment=""):
        # Empty the view first: a link that changes only the fragment re-renders on the
        # hashchange event, and until then the previous page must not pass for the new one.
        self.driver.execute_script("const v = document.getElementById('view'); if (v) v.textContent = '';")
        self.driver.get(self.args.base + "/admin/" + fragment)

    def open_tx(self, gid):
        self.open("#/tx/" + urllib.parse.quote(gid, safe=""))
        self.wait(f"page of {gid}", lambda d: d.find_elements(By.ID, "attempt-table") or d.find_elements(By.ID, "not-found")
                  or d.find_elements(By.CSS_SELECTOR, "p.error"))
        self.check(self.driver.find_elements(By.ID, "attempt-table"),
                   f"page of {gid} shows no attempts table: {self.text('view')}")
        shown = self.driver.find_element(By.ID, "tx-gid")
        self.check(shown.text == gid, f"page title shows {shown.text!r}, not the gid {gid!r}")
        self.check(not shown.find_elements(By.XPATH, "./*"), f"the gid {gid!r} was rendered as markup")

    def text(self, element_id):
        """The element's rendered text, read in one script (a re-render cannot make it stale)."""
        text = self.driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.innerText : null;", element_id)
        return text if text is not None else f"(no #{element_id})"

    def listed_gids(self):
        """The gids of the rows shown, or None while the list is loading (read in one script, so a
        re-render cannot leave a stale element in between)."""
        return self.driver.execute_script("""
            if (document.getElementById('no-results')) return [];
            const table = document.getElementById('tx-table');
            if (!table) return null;
            return Array.from(table.querySelectorAll('tr.tx-row')).map((row) => row.dataset.gid);""")

    def wait_listed(self, what, predicate):
        def ready(_):
            gids = self.listed_gids()
            return gids is not None and predicate(gids)
        try:
            self.wait(what, ready)
        except CheckFailed as error:
            raise CheckFailed(f"{error}; listed: {self.listed_gids()}; page: {self.text('view')[:500]}")

    # ---- checks ----

    def token_flow(self):
        self.open()
        self.wait("the token form after a 401", EC.visibility_of_element_located((By.ID, "token-panel")))
        self.screenshot("token-form")
        self.driver.find_element(By.ID, "token-input").send_keys(self.args.token)
        self.driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        self.wait("the token panel to hide", EC.invisibility_of_element_located((By.ID, "token-panel")))
        stored = self.driver.execute_script("return sessionStorage.getItem('dtm-admin-token')")
        self.check(stored == self.args.token, "the token was not kept in sessionStorage")

    def list_and_filters(self):
        a = self.args
        ours = {a.ok, a.failed, a.stuck}
        self.open()
        self.wait_listed("the list to show the three gids", lambda gids: ours <= set(gids))
        self.screenshot("list")
        # Narrow to this run by gid prefix, then by status.
        box = self.driver.find_element(By.ID, "filter-gid_prefix")
        box.clear()
        box.send_keys(a.prefix)
        self.driver.find_element(By.ID, "apply-filters").click()
        self.wait_listed("the gid prefix filter", lambda gids: set(gids) == ours)
        Select(self.driver.find_element(By.ID, "filter-status")).select_by_value("failed")
        self.driver.find_element(By.ID, "apply-filters").click()
        self.wait_listed("the status filter (failed)", lambda gids: gids == [a.failed])
        self.check("status=failed" in self.driver.current_url, f"filters are not in the link: {self.driver.current_url}")
        self.screenshot("list-filtered")
        # The row links to the transaction's page.
        self.driver.find_element(By.CSS_SELECTOR, "#tx-table tr.tx-row a.gid").click()
        self.wait("the link to the failed saga's page", lambda d: d.find_elements(By.ID, "attempt-table"))
        self.check(self.text("tx-gid") == a.failed, f"the row linked to {self.text('tx-gid')!r}")
        # Paging through a deep link with one row a page: older, older, newer (newest first).
        self.open("#/?gid_prefix=" + urllib.parse.quote(a.prefix, safe="") + "&limit=1")
        self.wait_listed("page 1 of 1-row pages", lambda gids: len(gids) == 1)
        pages = [self.listed_gids()[0]]
        for _ in range(2):
            self.driver.find_element(By.ID, "next-page").click()
            self.wait_listed("the next page", lambda gids, seen=list(pages): len(gids) == 1 and gids[0] not in seen)
            pages.append(self.listed_gids()[0])
        self.check(set(pages) == ours, f"paging showed {pages}")
        # A full last page may still offer "Older" (the API knows the end only once a page is
        # short); that page is then empty and the end.
        back_to = pages[1]
        if self.driver.find_element(By.ID, "next-page").is_enabled():
            self.driver.find_element(By.ID, "next-page").click()
            self.wait_listed("the empty page after the last", lambda gids: gids == [])
            back_to = pages[2]
        self.wait("Older to be disabled at the end", lambda d: not d.find_element(By.ID, "next-page").is_enabled())
        self.driver.find_element(By.ID, "prev-page").click()
        self.wait_listed("the previous page", lambda gids: gids == [back_to])
        # The time range (through the link: typing into datetime-local fields depends on the locale).
        def rfc3339(delta):
            t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=delta)
            return t.strftime("%Y-%m-%dT%H:%M:%SZ")
        base = "#/?gid_prefix=" + urllib.parse.quote(a.prefix, safe="")
        for query, expected in [("&created_from=" + rfc3339(-1), ours), ("&created_from=" + rfc3339(1), set()),
                                ("&created_to=" + rfc3339(-1), set()),
                                ("&created_from=" + rfc3339(-1) + "&created_to=" + rfc3339(1), ours)]:
            self.open(base + query)
            self.wait_listed(f"the time filter {query}", lambda gids, want=expected: set(gids) == want)
        from_field = self.driver.find_element(By.ID, "filter-created_from").get_attribute("value")
        self.check(from_field, "the created-from field does not show the link's time")

    def failed_saga(self):
        gid = self.args.failed
        self.open_tx(gid)
        arrows = self.driver.find_elements(By.CSS_SELECTOR, "#sequence g.attempt")
        ops = [(g.get_attribute("data-op"), g.get_attribute("data-result")) for g in arrows]
        self.check(("action", "failure") in ops, f"no failed action arrow in the diagram: {ops}")
        compensations = self.driver.find_elements(By.CSS_SELECTOR, "#sequence g.attempt.compensation")
        self.check(compensations, f"no compensation arrow in the diagram: {ops}")
        self.check(all(g.get_attribute("data-op") == "compensate" for g in compensations), f"compensations: {ops}")
        dash = self.driver.execute_script(
            "return getComputedStyle(document.querySelector('#sequence g.compensation line.arrow')).strokeDasharray")
        self.check(dash and dash != "none", f"compensation arrows are not drawn dashed ({dash})")
        lifelines = self.driver.find_elements(By.CSS_SELECTOR, "#sequence g.lifeline")
        self.check(len(lifelines) >= 2, "the diagram has no service lifeline")
        rows = self.driver.find_elements(By.CSS_SELECTOR, "#attempt-table tbody tr")
        self.check(len(rows) == len(arrows), f"{len(rows)} attempt rows but {len(arrows)} arrows")
        self.check(len(rows) >= 3, f"expected the action calls and the compensations, got {len(rows)} attempts")
        self.check(any("failure" in r.get_attribute("class") for r in rows), "no failed attempt row")
        self.check("failed" in self.text("pending").lower(), f"the finished box says: {self.text('pending')}")
        self.screenshot("failed-saga")
        self.element_screenshot("failed-saga-diagram", "#diagram .diagram-wrap")

    def ok_saga(self):
        self.open_tx(self.args.ok)
        results = [g.get_attribute("data-result") for g in self.driver.find_elements(By.CSS_SELECTOR, "#sequence g.attempt")]
        self.check(results and all(r == "success" for r in results), f"succeeded saga's arrows: {results}")
        self.screenshot("succeeded-saga")

    def stuck(self):
        gid = self.args.stuck
        self.open_tx(gid)
        self.wait("the why-not-finished box", lambda d: d.find_elements(By.ID, "pending-last-error"))
        error = self.driver.find_element(By.ID, "pending-last-error")
        self.check(self.args.stuck_error in error.text,
                   f"last error {error.text!r} does not show {self.args.stuck_error!r} as text")
        self.check(not error.find_elements(By.XPATH, ".//*"), "the last error was rendered as markup")
        self.check(not self.driver.find_elements(By.CSS_SELECTOR, "#view img, #view b, #view i"),
                   "markup from the data became elements")
        pwned = self.driver.execute_script("return window.__dtmxss === undefined")
        self.check(pwned, "script from the data ran")
        fields = {dd.get_attribute("data-field"): dd.text
                  for dd in self.driver.find_elements(By.CSS_SELECTOR, "#pending dd")}
        self.check(fields.get("next retry", "—") != "—", f"no next retry time: {fields}")
        self.check(fields.get("retry count", "—") not in ("—", ""), f"no retry count: {fields}")
        self.check(self.text("pending-explanation").strip(), "no explanation")
        errors = self.driver.find_elements(By.CSS_SELECTOR, "#attempt-table td.error-text")
        self.check(any(self.args.stuck_error in e.text for e in errors), "attempts do not show the error text")
        self.screenshot("stuck")
        self.viewport_screenshot("overview", 1200, 1260)

        # Retry now: the answer shows on the page re-read after it.
        self.driver.find_element(By.ID, "retry-now").click()
        self.wait("retry-now's answer", lambda d: 'retry-now: {"dtm_result":"SUCCESS"}' in self.text("action-result"))

        self.step = "force stop"
        self.driver.find_element(By.ID, "force-stop").click()
        alert = self.wait("the confirm dialog", EC.alert_is_present())
        self.check(self.args.stuck in alert.text, f"the confirm does not name the gid: {alert.text!r}")
        alert.accept()
        self.wait("force-stop's answer", lambda d: 'force-stop: {"dtm_result":"SUCCESS"}' in self.text("action-result"))
        self.wait("the page to show status failed",
                  lambda d: d.find_elements(By.CSS_SELECTOR, "h1 .badge.status-failed"))
        self.screenshot("stuck-force-stopped")


def main():
    parser = argparse.ArgumentParser()
    for name in ["--base", "--artifacts", "--prefix", "--ok", "--failed", "--stuck", "--stuck-error"]:
        parser.add_argument(name, required=True)
    parser.add_argument("--token")
    args = parser.parse_args()
    os.makedirs(args.artifacts, exist_ok=True)
    driver = make_driver()
    run = Run(driver, args)
    try:
        if args.token:
            run.token_flow()
        run.list_and_filters()
        run.failed_saga()
        run.ok_saga()
        run.stuck()
        print(json.dumps({"ok": True, "screenshots": run.screenshots}))
        return 0
    except Exception as error:  # report which step failed, with the page and console
        try:
            run.screenshot("failure")
            console = [entry.get("message") for entry in driver.get_log("browser")]
        except Exception:
            console = []
        print(json.dumps({"ok": False, "step": run.step, "error": f"{type(error).__name__}: {error}",
                          "url": driver.current_url, "console": console[-20:], "screenshots": run.screenshots}))
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
