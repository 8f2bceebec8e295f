"""The demo page in a real browser: headless Chromium driven by Selenium.

Asserts, through the load balancer:
- six clicks on Count show 1..6, served by both nodes;
- page JavaScript cannot read the session cookie (HttpOnly), though it exists;
- ending the session makes the next count 1;
- "Where you're signed in": signed in as the same user from two browser
  contexts, one signs the other out, and the other is signed out on its
  next request.
"""

import os
import sys
import tempfile

# Use the driver and browser we name below; never fetch one from the network.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def browser():
    """A headless Chromium with a profile (cookie jar) of its own."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=900,760",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def sign_in(driver, wait, user: str, devices: int) -> None:
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "sign-in-button").click()
    wait.until(lambda d: f"on {devices} device" in d.find_element(By.ID, "signed-in").text)


def main(url: str, screenshot: str) -> int:
    driver = browser()
    other = None
    checks = 0
    try:
        wait = WebDriverWait(driver, 10)
        driver.get(url + "/")
        count = driver.find_element(By.ID, "count")
        assert count.text == "0", f"a new visitor starts at 0, saw {count.text!r}"

        for expected in range(1, 7):
            driver.find_element(By.ID, "count-button").click()
            wait.until(lambda d: d.find_element(By.ID, "count").text == str(expected))
        nodes = [chip.text for chip in driver.find_elements(By.CSS_SELECTOR, "#history li")]
        assert len(nodes) == 6 and set(nodes) == {"node-1", "node-2"}, f"served by {nodes}"
        print(f"  six clicks counted 1..6, served by {nodes}")
        checks += 1

        cookies = {c["name"]: c for c in driver.get_cookies()}
        assert "sid" in cookies and cookies["sid"]["httpOnly"], f"cookies: {list(cookies)}"
        visible = driver.execute_script("return document.cookie")
        assert "sid=" not in visible, f"page JavaScript can read the session cookie: {visible!r}"
        print("  the sid cookie exists and page JavaScript cannot read it")
        checks += 1

        driver.save_screenshot(screenshot)
        print(f"  screenshot: {screenshot}")

        driver.find_element(By.ID, "end-button").click()
        wait.until(lambda d: d.find_element(By.ID, "ttl").text == "no session")
        driver.find_element(By.ID, "count-button").click()
        wait.until(lambda d: d.find_element(By.ID, "count").text == "1")
        print("  after End session, the next count is 1")
        checks += 1

        # Two browser contexts, one user: the laptop signs the phone out.
        other = browser()
        other_wait = WebDriverWait(other, 10)
        sign_in(driver, wait, "ada", 1)
        other.get(url + "/")
        sign_in(other, other_wait, "ada", 2)
        driver.get(url + "/")
        wait.until(lambda d: "on 2 device" in d.find_element(By.ID, "signed-in").text)
        rows = driver.find_elements(By.CSS_SELECTOR, "#sessions li")
        foreign = [row for row in rows if row.get_attribute("data-current") == "false"]
        assert len(rows) == 2 and len(foreign) == 1, f"rows: {[r.text for r in rows]}"
        foreign[0].find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: "on 1 device" in d.find_element(By.ID, "signed-in").text)
        other.get(url + "/")
        other_wait.until(lambda d: d.find_element(By.ID, "signed-in").text == "Not signed in")
        print("  signed in from two browsers; one signed the other out, which is signed out on its next request")
        checks += 1
    finally:
        driver.quit()
        if other is not None:
            other.quit()
    print(f"browser: {checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
