"""JupyterLab in a real browser: the explorer cell of notebook 02, run on its own in headless
Debian Chromium on the smoke profile, then what a user does: pick IDSR, click "Train or load",
and see the progress bar complete, the result table and the learning curve.

Skips, with the reason, where Chromium, chromedriver or selenium are not installed (.ci/run
installs them). Screenshots go to runs/screenshots/ (ignored by git); their paths are printed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from browser.lab import chromium, jupyter_lab, missing_browser, screenshot_dir
from browser.notebook import EXPLORER_CELL, write_notebook

pytestmark = pytest.mark.slow

CELL_TIMEOUT = 240.0  # kernel start, imports, the smoke data set and the default run
CLICK_TIMEOUT = 120.0  # an ID SASRec on smoke trains in about a second; a loaded CI machine
PAGE_TIMEOUT = 90.0
TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture
def lab_env(tmp_path: Path) -> dict[str, str]:
    """What the server and its kernels see: a temporary MMSR_HOME and results store, the smoke
    profile, one thread (the CI machine has two cores), a file the cell records into."""
    home = tmp_path / "home"
    return {
        **os.environ, "MMSR_HOME": str(home),
        "MMSR_RESULTS": str(home / "results" / "mmsr.sqlite"), "MMSR_PROFILE": "smoke",
        "MMSR_RECORD_FILE": str(tmp_path / "records.json"), "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        "SE_OFFLINE": "true", "SE_AVOID_STATS": "true",
    }


def _wait(driver: Any, timeout: float, what: str, check: Callable[[Any], Any]) -> Any:
    """`check(driver)`'s first truthy value; an error in the page fails at once, with its text."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    def step(d: Any) -> Any:
        text = d.execute_script(  # in one go: outputs are re-rendered while the kernel works
            "return Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
            ".map(e => e.innerText).join('\\n')")
        if TRACEBACK in text:
            raise AssertionError(f"the cell failed while waiting for {what}:\n{text[-3000:]}")
        return check(d)

    return WebDriverWait(driver, timeout, poll_frequency=0.5,
                         ignored_exceptions=(StaleElementReferenceException,)).until(
        step, message=f"no {what} within {timeout:.0f} s")


def _xpath(driver: Any, path: str) -> Any:
    found = driver.find_elements("xpath", path)
    return found[0] if found and found[0].is_displayed() else None


def _run_cell(driver: Any, editor: Any, tries: int = 10) -> None:
    """Ctrl+Enter in the cell, as a user runs it. Right after the kernel turns idle JupyterLab
    may drop that run (the prompt stays "[ ]"); a user would press again, and so does this."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(tries):
        editor.click()
        ActionChains(driver).key_down(Keys.CONTROL).send_keys(Keys.ENTER) \
            .key_up(Keys.CONTROL).perform()
        try:  # "[*]" while it runs, "[1]" when done
            _wait(driver, 3, "cell start", lambda d: any(
                p.text.strip() not in ("", "[ ]:") for p in d.find_elements(
                    "css selector", ".jp-Cell .jp-InputPrompt")))
            return
        except TimeoutException:
            continue
    raise AssertionError(f"JupyterLab did not run the cell after {tries} Ctrl+Enter")


def _idle(driver: Any) -> bool:
    """The kernel is idle and the cell has its execution count (not "[*]")."""
    prompts = [p.text.strip() for p in driver.find_elements(
        "css selector", ".jp-Cell .jp-InputPrompt")]
    return bool(driver.find_elements(
        "css selector", ".jp-Notebook-ExecutionIndicator[data-status='idle']")) \
        and bool(prompts) and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts)


def _output(driver: Any) -> Any:
    """The explorer's output area (its result table and learning curve)."""
    return driver.find_element("css selector", ".widget-output")


def _curve(driver: Any) -> Any:
    """The learning curve's image, once the browser has decoded it."""
    return _wait(driver, PAGE_TIMEOUT, "learning curve", lambda d: next(
        (img for img in _output(d).find_elements("css selector", "img") if d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", img)), None))


def _shot(driver: Any, name: str) -> None:
    """A screenshot where a person can look at it afterwards; its path is printed."""
    path = screenshot_dir() / f"browser_explorer_{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")


def test_explorer_cell_trains_in_jupyterlab(tmp_path: Path, lab_env: dict[str, str]) -> None:
    reason = missing_browser()
    if reason is not None:
        pytest.skip(f"browser test not run: {reason}")
    root = tmp_path / "notebooks"
    root.mkdir()
    write_notebook(root / "explorer.ipynb", EXPLORER_CELL)
    with jupyter_lab(root, lab_env, tmp_path / "jupyter") as lab, \
            chromium(tmp_path / "chromium", tmp_path / "chromedriver.log") as driver:
        try:
            driver.get(lab.open_url("explorer.ipynb"))
            _wait(driver, PAGE_TIMEOUT, "idle kernel", lambda d: d.find_elements(
                "css selector", ".jp-Notebook-ExecutionIndicator[data-status='idle']"))
            editor = _wait(driver, PAGE_TIMEOUT, "cell editor", lambda d: _xpath(
                d, "//div[contains(@class,'jp-Cell')]//div[contains(@class,'cm-content')]"))
            _run_cell(driver, editor)
            button = _wait(driver, CELL_TIMEOUT, "explorer widget",
                           lambda d: _xpath(d, "//button[normalize-space()='Train or load']"))
            _wait(driver, PAGE_TIMEOUT, "the cell's end", _idle)
            # the widget starts with the cell's own run: Table III's MergeAttn-1 row
            assert "explore-sasrec-MMSR-RoBERTa-MAE-merge_attn-1" in _output(driver).text
            _curve(driver)
            _shot(driver, "cell")
            records = json.loads(Path(lab_env["MMSR_RECORD_FILE"]).read_text())
            assert 0.0 <= records["explorer_hr10"] <= 100.0

            _xpath(driver, "//button[contains(@class,'widget-toggle-button')]"
                           "[normalize-space()='IDSR']").click()
            _wait(driver, PAGE_TIMEOUT, "the IDSR choice", lambda d: _xpath(
                d, "//*[contains(@class,'widget-html-content')][contains(., 'not run yet')]"))
            button.click()
            label = _wait(driver, CLICK_TIMEOUT, "finished run", lambda d: _xpath(
                d, "//*[contains(@class,'widget-html-content')][starts-with(normalize-space(),"
                   " 'done:') or starts-with(normalize-space(), 'failed')]"))
            assert label.text.startswith("done: trained 3 epochs"), label.text

            bar = driver.find_element("css selector", ".widget-hprogress .progress-bar")
            assert "100%" in bar.get_attribute("style"), bar.get_attribute("style")
            assert "success" in bar.get_attribute("class")

            out = _output(driver)
            table = out.find_element("css selector", "table")
            header = [th.text for th in table.find_elements("css selector", "thead th")]
            assert {"HR@10", "NDCG@10", "paper row", "paper HR@10"} <= set(header), header
            row = table.find_element("css selector", "tbody tr")
            cells = dict(zip(header[1:], (td.text for td in row.find_elements(
                "css selector", "td")), strict=True))
            assert row.find_element("css selector", "th").text == "explore-sasrec-IDSR"
            for metric in ("HR@10", "NDCG@10", "paper HR@10"):
                assert re.fullmatch(r"\d+\.\d{4}", cells[metric]), cells  # the paper's 4 decimals
            assert cells["paper row"] == "Table IV: SASRec / IDSR"
            assert "None" not in table.text and "nan" not in table.text.lower()
            _curve(driver)
            _wait(driver, PAGE_TIMEOUT, "idle kernel after the click", _idle)
            _shot(driver, "trained")
        except BaseException:
            print("JupyterLab log:\n" + lab.log_tail())
            with contextlib.suppress(Exception):  # a broken browser must not hide the error
                _shot(driver, "failure")
            raise
