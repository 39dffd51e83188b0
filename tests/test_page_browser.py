"""The page at `/` in a real browser: Debian's chromium driven by selenium, against a real `oneshot serve` with the
real models and real LFW photos.

Enrol a person from a file through the page, identify another photo of them and read the name from the page (the
photo is drawn with the box and name; a screenshot is saved in the test's tmp dir), see a bad photo's one-line
error, start the (fake) camera and identify a frame, then remove the person after confirming, and see the list
empty. Skips only where chromium or chromedriver is not installed (`apt-get install -y chromium
chromium-driver`), or without the LFW photos.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="fastapi is a runtime dependency: pip install -e '.[test]'")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency: pip install -e '.[test]'")

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.serving import Server  # noqa: E402
from tests.test_cli import detectable_people  # noqa: E402

pytestmark = pytest.mark.slow

# What chromium needs on a CI machine without network or display (it stalls on its background services otherwise),
# plus a fake camera that needs no permission prompt, for the webcam path.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1200,1600",
                  "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")


def chromium() -> tuple[str, str]:
    """(browser, driver) paths, or skip saying how to install them."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no chromium/chromedriver on this machine: apt-get install -y chromium chromium-driver")
    return browser, driver


@pytest.fixture()
def browser(tmp_path: Path) -> Any:
    binary, driver_path = chromium()
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_enrol_identify_remove_through_the_page(tmp_path: Path, browser: Any) -> None:
    (ada_first, ada_second), (other, _) = (p[:2] for p in detectable_people(2))
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo\n")
    wait = WebDriverWait(browser, 60)
    by_id = lambda name: browser.find_element(By.ID, name)  # noqa: E731

    with Server(tmp_path / "home") as server:
        browser.get(server.url + "/")
        wait.until(ec.visibility_of_element_located((By.ID, "people-empty")))

        # enrol from a file, with a name
        by_id("enroll-name").send_keys("Ada Lovelace")
        by_id("enroll-largest").click()
        by_id("enroll-file").send_keys(str(ada_first))
        by_id("enroll-submit").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "enroll-result"), "enrolled 'Ada Lovelace'"))
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#people li[data-name='Ada Lovelace']")))
        assert not by_id("people-empty").is_displayed()

        # identify another photo of her: the name is on the page and drawn on the photo
        by_id("identify-file").send_keys(str(ada_second))
        by_id("identify-submit").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#identify-result .face-name")))
        names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#identify-result .face-name")]
        assert names[0] == "Ada Lovelace", names
        canvas = by_id("identify-canvas")
        assert canvas.is_displayed()
        assert int(canvas.get_attribute("width")) == 170       # the photo itself (LFW crops are 170×170)
        by_id("identify-view").screenshot(str(tmp_path / "identify-view.png"))
        assert (tmp_path / "identify-view.png").stat().st_size > 1000

        # someone else: "unknown"
        by_id("identify-file").send_keys(str(other))
        by_id("identify-submit").click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#identify-result .face-name"), "unknown"))

        # a bad photo: the service's one-line message
        by_id("identify-file").send_keys(str(notes))
        by_id("identify-submit").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "error: notes.jpg: not an image"))
        assert by_id("error").text.count("\n") == 0

        # the camera (chromium's fake device): capture a frame and identify it
        by_id("camera-start").click()
        wait.until(lambda d: d.find_element(By.ID, "camera-identify").is_enabled()
                   and d.execute_script("return document.getElementById('camera').videoWidth") > 0)
        by_id("camera-identify").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#identify-result li")))
        assert by_id("error").text == ""
        by_id("camera-stop").click()

        # remove, confirming in the dialog; the list is then empty
        browser.find_element(By.CSS_SELECTOR, "#people li[data-name='Ada Lovelace'] .remove").click()
        alert = wait.until(ec.alert_is_present())
        assert "Remove Ada Lovelace" in alert.text
        alert.accept()
        wait.until(ec.visibility_of_element_located((By.ID, "people-empty")))
        assert browser.find_elements(By.CSS_SELECTOR, "#people li") == []

        problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
                    and "notes.jpg" not in e["message"] and "/identify" not in e["message"]]
        assert problems == [], problems              # no script errors, nothing blocked by the page's CSP
        assert server.stop() == 0


def test_the_page_asks_for_the_token(tmp_path: Path, browser: Any) -> None:
    """With a token set, the page shows the service's 401 line and a token box; once given, the page works."""
    wait = WebDriverWait(browser, 60)
    with Server(tmp_path / "home", env={"ONESHOT_TOKEN": "page-test-token-123"}) as server:
        browser.get(server.url + "/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "error: this service needs a token"))
        assert browser.find_element(By.ID, "token-row").is_displayed()
        browser.find_element(By.ID, "token").send_keys("wrong")
        browser.find_element(By.ID, "token-save").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "needs a token"))
        browser.find_element(By.ID, "token").send_keys("page-test-token-123")
        browser.find_element(By.ID, "token-save").click()
        wait.until(ec.invisibility_of_element_located((By.ID, "token-row")))
        assert browser.find_element(By.ID, "error").text == ""
        assert browser.find_element(By.ID, "people-empty").is_displayed()
        assert server.stop() == 0
