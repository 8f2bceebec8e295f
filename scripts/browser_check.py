"""The demo page in a real browser: headless Chromium driven by Selenium.

Asserts, through the load balancer:
- six clicks on Count show 1..6, served by both nodes;
- page JavaScript cannot read the session cookie (HttpOnly), though it exists;
- ending the session makes the next count 1.
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


def main(url: str, screenshot: str) -> int:
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
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
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
    finally:
        driver.quit()
    print(f"browser: {checks} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
