"""``videocm serve``: the request checks, the catalogue of models, and the page itself in headless Chromium
(submit a prompt, both videos play, bad input is a message in the page), plus two requests at once."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from videocm.errors import VideoCMError
from videocm.serve import Catalogue, ServeConfig, checked_request

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def catalogue():
    return Catalogue.find([str(MODELS / "teacher-flow"), str(MODELS / "lcm-flow")])


def test_requests_are_checked_with_one_line_messages(catalogue):
    config = ServeConfig(max_steps=60)
    good = ("a red 3 moving left", "teacher-flow", "lcm-flow", 50, 4, 3.0, 7)
    assert checked_request(catalogue, config, *good) == ("a red 3 moving left", 50, 4, 3.0, 7)
    assert checked_request(catalogue, config, "  a red 3 moving left ", *good[1:5], None, 0.0)[3:] == (None, 0)
    for changed, message in (({0: "  "}, "the prompt is empty"), ({1: "nope"}, "unknown teacher 'nope'"),
                             ({2: "teacher-flow"}, "unknown student 'teacher-flow'"),
                             ({3: 0}, "teacher steps must be a whole number from 1 to 60"),
                             ({4: 61}, "student steps must be a whole number from 1 to 60"),
                             ({4: 2.5}, "student steps"), ({4: None}, "student steps"),
                             ({5: -1}, "guidance must be from 0 to 30"), ({6: -3}, "the seed")):
        request = list(good)
        for index, value in changed.items():
            request[index] = value
        with pytest.raises(VideoCMError, match=message) as error:
            checked_request(catalogue, config, *request)
        assert "\n" not in str(error.value)


def test_the_catalogue_sorts_models_by_kind_and_refuses_others(tmp_path):
    found = Catalogue.find([], str(MODELS))
    assert {"teacher-flow", "teacher-vp"} <= set(found.teachers) and {"lcm-flow", "dcm-flow"} <= set(found.students)
    assert "control-flow" in found.controls
    with pytest.raises(VideoCMError, match="is a vae folder"):
        Catalogue.find([str(MODELS / "teacher-flow"), str(MODELS / "vae")])
    with pytest.raises(VideoCMError, match="not a videocm model folder"):
        Catalogue.find([str(tmp_path)])
    with pytest.raises(VideoCMError, match="at least one teacher and one student"):
        Catalogue.find([str(MODELS / "teacher-flow")])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "videocm.cli", "serve", "--port", str(port), "--model",
                                    str(MODELS / "teacher-flow"), "--model", str(MODELS / "lcm-flow"), "--max-steps",
                                    "60"], stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                if urllib.request.urlopen(url, timeout=2).status == 200:
                    break
            except OSError:
                if process.poll() is not None:
                    raise AssertionError(f"videocm serve exited: {log.read_text()}")
                time.sleep(0.5)
        else:
            raise AssertionError(f"videocm serve did not answer on {url}: {log.read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def browser():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("VIDEOCM_REQUIRE_BROWSER"):
            raise AssertionError("chromium and chromedriver are required (VIDEOCM_REQUIRE_BROWSER is set): "
                                 "apt-get install chromium chromium-driver")
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1400",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def set_number(driver, element_id: str, value) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.CSS_SELECTOR, f"#{element_id} input, #{element_id} textarea")
    field.clear()
    field.send_keys(str(value))


@pytest.mark.slow
def test_the_page_generates_both_clips_which_play_and_shows_bad_input_in_the_page(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 240)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
        set_number(driver, "teacher-steps", 6)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()

        def videos():
            return driver.execute_script(
                "return Array.from(document.querySelectorAll('#teacher-video video, #student-video video')).map("
                "v => ({src: v.currentSrc, ready: v.readyState, duration: v.duration, error: v.error && v.error.code}))")

        wait.until(lambda d: len(videos()) == 2 and all(v["ready"] >= 1 and v["duration"] > 0 for v in videos()))
        for video in videos():
            assert video["src"].endswith(".webm") and video["error"] is None and video["duration"] > 0
            with urllib.request.urlopen(video["src"], timeout=10) as response:  # a decodable file behind it
                data = response.read()
            assert data[:4] == b"\x1a\x45\xdf\xa3" and len(data) > 500  # EBML: a WebM header
        teacher = driver.find_element(By.CSS_SELECTOR, "#teacher-caption").text
        student = driver.find_element(By.CSS_SELECTOR, "#student-caption").text
        assert "teacher-flow" in teacher and "6 steps" in teacher and "12 network evaluations" in teacher
        assert "lcm-flow" in student and "4 steps" in student and "4 network evaluations" in student
        assert "Speed-up" in driver.find_element(By.CSS_SELECTOR, "#summary").text
        driver.save_screenshot(str(tmp_path / "serve.png"))
        assert (tmp_path / "serve.png").stat().st_size > 10_000
        # bad input: a message in the page, no traceback
        for element_id, value, message in (("prompt", " ", "the prompt is empty"),
                                           ("student-steps", 500, "student steps must be a whole number from 1 to 60")):
            driver.get(server)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#generate"))
            set_number(driver, element_id, value)
            driver.find_element(By.CSS_SELECTOR, "#generate").click()
            wait.until(lambda d: message in d.find_element(By.TAG_NAME, "body").text)
            body = driver.find_element(By.TAG_NAME, "body").text
            assert "Traceback" not in body
    finally:
        driver.quit()


@pytest.mark.slow
def test_two_requests_at_once_both_finish(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    jobs = [client.submit(prompt, "teacher-flow", "lcm-flow", 6, 2, 4.0, seed, "full", "none", None, api_name="/run")
            for prompt, seed in (("a red 3 moving left", 1), ("a blue 7 moving up", 2))]
    results = [job.result(timeout=300) for job in jobs]
    for result in results:
        teacher_video, teacher_caption, student_video, student_caption, summary = result
        assert "Speed-up" in summary and "2 steps" in student_caption
    assert results[0][0] != results[1][0] and results[0][2] != results[1][2]  # each request its own files


def test_a_busy_port_is_refused_in_one_line_before_any_model_loads(capsys):
    from videocm.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # a models folder that does not exist: the port is checked first, so its error is the one given
        assert main(["serve", "--port", str(port), "--models-dir", "/nonexistent"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"videocm: error: cannot listen on 127.0.0.1:{port}") and "\n" not in err
    assert "pass a free --port" in err
