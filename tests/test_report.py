"""Tests for report.jsonl and report.html, the page driven in real Chromium.

The browser tests run Debian's headless Chromium through Selenium and
chromedriver; `bash scripts/ensure_browser.sh` (run by `make`) installs both.
The machine has no network, hence the flags that stop Chromium's own calls.
"""

import json
import math
import os
import pathlib
import re
import uuid

import pytest

from trak_jax import files, report

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_FLAGS = (
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--window-size=1440,900",
)
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "out/test_artifacts"
HOSTILE = '</script><script>alert(1)</script> "quoted" & <!-- x -->'


def _proponent(rank, pid, score, text, relevant=False):
  return {
    "rank": rank,
    "id": pid,
    "score": score,
    "text": text,
    "relevant": relevant,
  }


def _record(query_id, prompt, target, **fields):
  record = {
    "query_id": query_id,
    "prompt": prompt,
    "target": target,
    "prediction": target,
    "correct": True,
    "frequency_bucket": None,
    "relation": None,
    "subject": None,
    "object": None,
    "relevant_ids": [],
    "results": {},
  }
  record.update(fields)
  return record


def _france():
  paris = "Paris is the capital of France, the largest city of france."
  return _record(
    "fact-france-capital",
    "The capital of France is",
    "Paris",
    frequency_bucket="11-30",
    relation="capital",
    subject="France",
    object="Paris",
    relevant_ids=["c1", "c7"],
    results={
      "trackstar": {
        "reciprocal_rank": 1.0,
        "proponents": [
          _proponent(1, "c1", 0.8, paris, True),
          _proponent(2, "c2", 0.4, "France borders Spain and Italy."),
          _proponent(3, "c7", -0.2, "In PARIS, France keeps its seat.", True),
        ],
      },
      "bm25": {
        "reciprocal_rank": 0.5,
        "proponents": [
          _proponent(1, "c3", 12.5, "The capital of Norway is Oslo."),
          _proponent(2, "c1", 10.0, paris, True),
        ],
      },
    },
  )


def _japan():
  return _record(
    "fact-japan-currency",
    "The currency of Japan is the",
    "yen",
    prediction="dollar",
    correct=False,
    frequency_bucket="1",
    relation="currency",
    subject="Japan",
    object="yen",
    relevant_ids=["c9"],
    results={
      "trackstar": {
        "reciprocal_rank": 1 / 11,
        "proponents": [_proponent(1, "c4", 0.3, "Japan is an island nation.")],
      },
      "bm25": {
        "reciprocal_rank": 1.0,
        "proponents": [_proponent(1, "c9", 7.0, "Japan pays in yen.", True)],
      },
    },
  )


def _hostile():
  text = f"{HOSTILE} Zürich meets 東京 🚀\u2028end"
  return _record(
    "fact-hostile",
    "He said \"<b>hi</b>\" & 'bye' in Zürich",
    "東京 🚀",
    frequency_bucket="2-3",
    relation="it's <odd>",
    subject="zürich",
    object="東京",
    relevant_ids=["h1"],
    results={
      "trackstar": {
        "reciprocal_rank": 0.5,
        "proponents": [
          _proponent(1, "h0", 0.9, "nothing here"),
          _proponent(2, "h1", 0.5, text, True),
        ],
      },
      # Rank 10 exactly: still a hit at 10.
      "bm25": {
        "reciprocal_rank": 0.1,
        "proponents": [_proponent(1, "h2", 3.0, "Zurich, not Zürich?")],
      },
    },
  )


def _user_query():
  return _record(
    "user-0",
    "Tell me about rivers:",
    "long",
    prediction="",
    correct=False,
    results={
      "trackstar": {
        "reciprocal_rank": 0.0,
        "proponents": [_proponent(1, "r1", 0.1, "Rivers are long.")],
      },
      "bm25": {"reciprocal_rank": 0.0, "proponents": []},
    },
  )


@pytest.fixture
def records():
  return [_france(), _japan(), _hostile(), _user_query()]


# --- report.jsonl ---------------------------------------------------------


def test_jsonl_round_trip(records, tmp_path):
  path = tmp_path / "run" / "report.jsonl"
  report.write_report_jsonl(records, str(path))
  lines = path.read_text(encoding="utf-8").split("\n")
  assert len(lines) == len(records) + 1 and lines[-1] == ""
  assert "東京" in lines[2]  # UTF-8, not \u escapes: people grep these files.
  assert report.read_report_jsonl(str(path)) == records


def test_jsonl_and_page_round_trip_on_a_remote_filesystem(records):
  # ram://, TensorFlow's in-memory filesystem, stands for gs:// here.
  root = f"ram://test-report-{uuid.uuid4().hex}/run"
  report.write_report_jsonl(records, f"{root}/report.jsonl")
  assert "東京".encode() in files.read_bytes(f"{root}/report.jsonl")
  assert report.read_report_jsonl(f"{root}/report.jsonl") == records
  report.write_report_html(records, f"{root}/report.html", title="remote")
  page = files.read_bytes(f"{root}/report.html").decode("utf-8")
  assert page == report.render_html(records, title="remote")


def test_read_names_file_and_line_of_a_bad_record(records, tmp_path):
  path = tmp_path / "report.jsonl"
  report.write_report_jsonl(records[:2], str(path))
  broken = dict(records[2])
  del broken["target"]
  with open(path, "a", encoding="utf-8") as f:
    f.write("\n" + json.dumps(broken) + "\n")
  with pytest.raises(ValueError, match=r"report\.jsonl:4: missing 'target'"):
    report.read_report_jsonl(str(path))


def test_write_rejects_nan_score_and_writes_nothing(records, tmp_path):
  records[1]["results"]["bm25"]["proponents"][0]["score"] = math.nan
  path = tmp_path / "report.jsonl"
  with pytest.raises(ValueError, match=r"fact-japan-currency/bm25.*score nan"):
    report.write_report_jsonl(records, str(path))
  assert not path.exists()


def test_headline_scores_only_queries_with_relevant_ids(records):
  summary = report.headline(records)
  assert summary["num_queries"] == 4
  assert summary["num_correct"] == 2
  assert summary["share_correct"] == 0.5
  trackstar = summary["methods"]["trackstar"]
  assert trackstar["num_scored"] == 3
  # MRR@10: Japan's first relevant proponent, at rank 11, counts 0.
  assert trackstar["mrr"] == pytest.approx((1 + 0.5) / 3)
  assert trackstar["recall_at_10"] == pytest.approx(2 / 3)
  assert summary["methods"]["bm25"]["recall_at_10"] == 1.0


def test_headline_at_another_k(records):
  methods = report.headline(records, k=2)["methods"]
  assert set(methods["bm25"]) == {"num_scored", "mrr", "recall_at_2"}
  # BM25's ranks 2, 1 and 10: only the first two are in the top 2.
  assert methods["bm25"]["mrr"] == pytest.approx((0.5 + 1) / 3)
  assert methods["bm25"]["recall_at_2"] == pytest.approx(2 / 3)
  assert report.headline([], k=2)["methods"] == {}
  empty = report.headline(records[3:], k=2)["methods"]["trackstar"]
  assert empty == {"num_scored": 0, "mrr": None, "recall_at_2": None}


# --- report.html, as text -------------------------------------------------

_DATA_TAG = re.compile(
  r'<script type="application/json" id="report-data">(.*?)</script>', re.S
)


def test_embedded_json_survives_hostile_text(records):
  page = report.render_html(records, title="Run </title><script>x()")
  (payload,) = _DATA_TAG.findall(page)
  data = json.loads(payload)
  assert data["records"] == records
  assert data["methods"] == ["trackstar", "bm25"]
  # Only the page's own two script elements open and close.
  assert page.count("<script") == 2
  assert page.count("</script>") == 2
  assert "<title>Run &lt;/title&gt;&lt;script&gt;x()</title>" in page


def test_page_references_nothing_outside_itself(records):
  page = report.render_html(records, title="t")
  assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page, re.I)
  assert not re.search(r"<(link|img|iframe)[^>]+(src|href)=\"(?!data:)", page)


def test_render_rejects_unknown_method(records):
  with pytest.raises(ValueError, match="tracin"):
    report.render_html(records, title="t", methods=["trackstar", "tracin"])


# --- report.html, in Chromium ---------------------------------------------


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
  if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
      f"{CHROMIUM} or {CHROMEDRIVER} missing and could not be installed; "
      "run `bash scripts/ensure_browser.sh` (as root) to install them"
    )
  webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium missing: pip install -e '.[dev]'"
  )
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in CHROME_FLAGS:
    options.add_argument(flag)
  profile = tmp_path_factory.mktemp("chromium-profile")
  options.add_argument(f"--user-data-dir={profile}")
  options.set_capability(
    "goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"}
  )
  # An explicit driver path keeps Selenium Manager (which downloads) out.
  service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
  browser = webdriver.Chrome(service=service, options=options)
  yield browser
  browser.quit()


@pytest.fixture
def page(driver, records, tmp_path):
  """Opens the two-method report; returns a loader for other reports."""

  def load(recs=records, fragment="", **kwargs):
    path = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.html"
    report.write_report_html(recs, str(path), title="FactBench demo", **kwargs)
    driver.get_log("browser")  # Drops what earlier pages logged.
    driver.get_log("performance")
    driver.get(path.as_uri() + fragment)
    return driver

  return load


def _by(css):
  from selenium.webdriver.common.by import By

  return By.CSS_SELECTOR, css


def _listed(driver):
  items = driver.find_elements(*_by("#query-list .query-item"))
  return [item.get_attribute("data-id") for item in items]


def _choose(driver, select_id, value):
  from selenium.webdriver.support.ui import Select

  Select(driver.find_element(*_by(f"#{select_id}"))).select_by_value(value)


def _severe(driver):
  return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_page_loads_without_errors_or_network(page):
  driver = page()
  assert _listed(driver) == [
    "fact-france-capital",
    "fact-japan-currency",
    "fact-hostile",
    "user-0",
  ]
  assert _severe(driver) == []
  requested = [
    json.loads(e["message"])["message"]["params"]["request"]["url"]
    for e in driver.get_log("performance")
    if '"Network.requestWillBeSent"' in e["message"]
  ]
  # The new-tab page's chrome:// requests come first; none leave the machine.
  assert any(u.startswith("file:") for u in requested)
  assert not [u for u in requested if re.match(r"(https?|wss?|ftp):", u)]
  summary = driver.find_element(*_by("#summary")).text
  # Share answered correctly, then the MRR@10 of trackstar and of bm25.
  assert "50%" in summary and "0.500" in summary and "0.533" in summary
  assert "R@10 0.67" in summary and "R@10 1.00" in summary
  # The log check can fail: an error on the page does reach it.
  driver.execute_script("console.error('probe')")
  assert any("probe" in e["message"] for e in _severe(driver))


def test_search_filters_the_list(page):
  driver = page()
  search = driver.find_element(*_by("#search"))
  search.send_keys("JAPAN")
  assert _listed(driver) == ["fact-japan-currency"]
  search.clear()
  search.send_keys("c7")  # a relevant id
  assert _listed(driver) == ["fact-france-capital"]
  search.clear()
  search.send_keys("zürich 東京")
  assert _listed(driver) == ["fact-hostile"]
  search.send_keys(" nowhere")
  assert _listed(driver) == []
  assert "No query matches" in driver.find_element(*_by("#query-list")).text
  assert driver.find_element(*_by("#list-count")).text == "0 of 4 queries"


def test_correct_bucket_and_hit_filters(page):
  driver = page()
  buckets = driver.find_elements(*_by("#filter-bucket option"))
  labels = [b.get_attribute("value") for b in buckets]
  assert labels[:4] == ["all", "1", "2-3", "11-30"] and len(labels) == 5
  _choose(driver, "filter-correct", "incorrect")
  assert _listed(driver) == ["fact-japan-currency", "user-0"]
  _choose(driver, "filter-correct", "correct")
  assert _listed(driver) == ["fact-france-capital", "fact-hostile"]
  _choose(driver, "filter-bucket", "2-3")
  assert _listed(driver) == ["fact-hostile"]
  _choose(driver, "filter-correct", "all")
  _choose(driver, "filter-bucket", "all")
  _choose(driver, "filter-hit", "hit")
  assert _listed(driver) == ["fact-france-capital", "fact-hostile"]
  _choose(driver, "filter-hit-method", "bm25")
  assert _listed(driver) == [
    "fact-france-capital",
    "fact-japan-currency",
    "fact-hostile",
  ]
  _choose(driver, "filter-hit", "miss")
  assert _listed(driver) == ["user-0"]


def _column_methods(driver):
  columns = driver.find_elements(*_by("#query-detail .method-column"))
  return [c.get_attribute("data-method") for c in columns]


def test_clicking_a_query_shows_methods_side_by_side(page):
  driver = page()
  driver.find_element(
    *_by('.query-item[data-id="fact-japan-currency"]')
  ).click()
  driver.find_element(
    *_by('.query-item[data-id="fact-france-capital"]')
  ).click()
  assert driver.current_url.endswith("#q=fact-france-capital")
  detail = driver.find_element(*_by("#query-detail"))
  assert "The capital of France is Paris" in detail.text
  assert _column_methods(driver) == ["trackstar", "bm25"]
  left, right = driver.find_elements(*_by(".method-column"))
  assert left.rect["x"] + left.rect["width"] <= right.rect["x"]
  assert abs(left.rect["y"] - right.rect["y"]) < 2
  proponents = left.find_elements(*_by(".proponent"))
  assert [p.get_attribute("data-id") for p in proponents] == ["c1", "c2", "c7"]
  relevant = left.find_elements(*_by(".proponent.relevant"))
  assert [p.get_attribute("data-id") for p in relevant] == ["c1", "c7"]
  assert all(p.find_elements(*_by(".badge-relevant")) for p in relevant)
  assert not proponents[1].find_elements(*_by(".badge-relevant"))
  subjects = left.find_elements(*_by(".proponent .p-text mark.subject"))
  objects = left.find_elements(*_by(".proponent .p-text mark.object"))
  assert [m.text for m in subjects] == ["France", "france", "France", "France"]
  assert [m.text for m in objects] == ["Paris", "PARIS"]
  widths = driver.execute_script(
    "return [...arguments[0].querySelectorAll('.score-bar')].map(b =>"
    " b.offsetWidth / b.parentElement.clientWidth)",
    left,
  )
  # Rendered widths: |score| / max |score| of the method for this query.
  assert widths == pytest.approx([1.0, 0.5, 0.25], abs=0.01)
  ARTIFACTS.mkdir(parents=True, exist_ok=True)
  assert driver.save_screenshot(str(ARTIFACTS / "report.png"))


def test_method_selectors_choose_the_columns(page):
  driver = page()
  _choose(driver, "method-left", "bm25")
  _choose(driver, "method-right", "trackstar")
  assert _column_methods(driver) == ["bm25", "trackstar"]


def test_hostile_text_is_displayed_not_run(page):
  from selenium.common.exceptions import NoAlertPresentException

  driver = page(fragment="#q=fact-hostile")
  selected = driver.find_element(*_by(".query-item.selected"))
  assert selected.get_attribute("data-id") == "fact-hostile"
  card = driver.find_element(*_by(".query-card"))
  assert "He said \"<b>hi</b>\" & 'bye' in Zürich" in card.text
  assert not card.find_elements(*_by("b"))
  column = driver.find_element(*_by('.method-column[data-method="trackstar"]'))
  hostile = column.find_element(*_by('.proponent[data-id="h1"]'))
  assert HOSTILE in hostile.text
  assert hostile.find_element(*_by("mark.subject")).text == "Zürich"
  assert hostile.find_element(*_by("mark.object")).text == "東京"
  assert driver.execute_script("return document.scripts.length") == 2
  with pytest.raises(NoAlertPresentException):
    driver.switch_to.alert.text  # noqa: B018 (reading it is the check)
  assert _severe(driver) == []


def test_one_method_report_shows_one_column(page, records):
  for record in records:
    del record["results"]["bm25"]
  driver = page(records, fragment="#q=fact-japan-currency")
  assert _column_methods(driver) == ["trackstar"]
  assert not driver.find_elements(*_by("#method-left"))
  column = driver.find_element(*_by(".method-column"))
  assert "first relevant at rank 11" in column.text
  assert _severe(driver) == []


def test_keyboard_moves_through_the_filtered_list(page):
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.keys import Keys

  driver = page()
  _choose(driver, "filter-correct", "incorrect")
  driver.execute_script("document.activeElement.blur()")
  ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()
  selected = driver.find_element(*_by(".query-item.selected"))
  assert selected.get_attribute("data-id") == "fact-japan-currency"
  ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()
  assert driver.current_url.endswith("#q=user-0")
